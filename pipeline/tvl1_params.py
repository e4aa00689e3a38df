"""The TV-L1 optical flow's parameters, shared by the OpenCV (:mod:`~fr_mer.pipeline.flow`) and the
torch (:mod:`~fr_mer.pipeline.tvl1_torch`) implementations; importing it imports neither torch nor OpenCV."""
from __future__ import annotations

from fr_mer.config import settings
from fr_mer.errors import ParameterError
from fr_mer.limits import check_number

#: Median filter sizes OpenCV's ``medianBlur`` accepts for float32 images (TV-L1's ``median_filtering``).
MEDIAN_SIZES = (3, 5)


@settings
class TVL1Params:
    """Parameters of ``cv2.optflow.DualTVL1OpticalFlow`` (defaults are OpenCV's).

    ``lambda_`` weights the data term (smaller: smoother flow); ``nscales``
    pyramid levels with ``scale_step`` between them; ``warps`` warpings per
    level; ``epsilon`` stopping tolerance; ``median_filtering`` the median
    filter size applied to the flow between warps. Recorded with
    :func:`fr_mer.config.to_record` (the cache's ``params["tvl1"]``).
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5
    use_initial_flow: bool = False

    def __post_init__(self) -> None:
        # OpenCV accepts NaN, negative or infinite values and returns flows all NaN, all 0 or of
        # thousands of pixels, or fails an assertion naming no option: each is refused here, by name.
        for name in ("tau", "lambda_", "theta"):
            check_number(f"TV-L1 {name} (--tvl1 {name}=...)", getattr(self, name), low=0, low_open=True, high=1e6)
        check_number("TV-L1 epsilon (--tvl1 epsilon=...)", self.epsilon, low=0, high=1e6)
        check_number("TV-L1 scale_step (--tvl1 scale_step=...)", self.scale_step, low=0, low_open=True, high=0.99)
        check_number("TV-L1 gamma (--tvl1 gamma=...)", self.gamma, low=0, high=1e6)
        for name, high in (("nscales", 20), ("warps", 100), ("inner_iterations", 1000), ("outer_iterations", 1000)):
            check_number(f"TV-L1 {name} (--tvl1 {name}=...)", getattr(self, name), low=1, high=high, integer=True)
        if self.median_filtering not in (0, 1, *MEDIAN_SIZES) or isinstance(self.median_filtering, bool):
            raise ParameterError(f"TV-L1 median_filtering (--tvl1 median_filtering=...) must be 0 or 1 (off) or one "
                                 f"of {MEDIAN_SIZES} (what OpenCV's medianBlur takes for float images; an other size "
                                 f"fails OpenCV's assertion), got {self.median_filtering!r}")

    def create(self):
        """A new OpenCV solver with these parameters."""
        import cv2

        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=self.tau, lambda_=self.lambda_, theta=self.theta, nscales=self.nscales,
            warps=self.warps, epsilon=self.epsilon, innnerIterations=self.inner_iterations,
            outerIterations=self.outer_iterations, scaleStep=self.scale_step, gamma=self.gamma,
            medianFiltering=self.median_filtering, useInitialFlow=self.use_initial_flow,
        )
