"""The TV-L1 optical flow's parameters, shared by the OpenCV (:mod:`~fr_mer.pipeline.flow`) and the
torch (:mod:`~fr_mer.pipeline.tvl1_torch`) implementations; importing it imports neither torch nor OpenCV."""
from __future__ import annotations

from fr_mer.config import settings


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

    def create(self):
        """A new OpenCV solver with these parameters."""
        import cv2

        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=self.tau, lambda_=self.lambda_, theta=self.theta, nscales=self.nscales,
            warps=self.warps, epsilon=self.epsilon, innnerIterations=self.inner_iterations,
            outerIterations=self.outer_iterations, scaleStep=self.scale_step, gamma=self.gamma,
            medianFiltering=self.median_filtering, useInitialFlow=self.use_initial_flow,
        )
