"""The annotated releases as data: what each one's folders and coding spreadsheet look like.

Facts from ``../shared/specs/datasets.md``; ``pipeline.readers.annotated`` reads
any release described here. Header texts are matched ignoring case, spaces and
punctuation, so ``OnsetFrame`` also matches an export's ``Onset Frame``.
"""
from __future__ import annotations

import re

from fr_mer.pipeline.readers.annotated import AnnotatedRelease
from fr_mer.pipeline.readers.discovery import has_subfolder, holds_folder_with, holds_folders_named_after_it

#: CASME II: ``CASME2_RAW_selected/sub01/EP02_01f/img46.jpg`` (or ``Cropped/.../reg_img46.jpg``)
#: annotated by ``CASME2-coding-20140508.xlsx`` or ``CASME2-coding-20190701.xlsx``, sheet
#: ``Sheet1``, header row 1: Subject, Filename, (blank), OnsetFrame, ApexFrame, OffsetFrame,
#: (blank), Action Units, Estimated Emotion[, Objective Classes in 20190701].
CASME2 = AnnotatedRelease(
    dataset="casme2",
    subject_folder=re.compile(r"sub\d+", re.IGNORECASE),
    subject_holds=has_subfolder,
    subject_example="sub01, sub02, ...",
    columns={
        "subject": ("Subject",),
        "filename": ("Filename",),
        "onset": ("OnsetFrame",),
        "apex": ("ApexFrame",),
        "offset": ("OffsetFrame",),
        "action_units": ("Action Units",),
        "emotion": ("Estimated Emotion",),
        "objective": ("Objective Classes",),
    },
    sheet="Sheet1",
    annotation_file=re.compile(r"^casme.?2.*coding.*\.(xlsx|xlsm|csv)$", re.IGNORECASE),
    annotation_example="CASME2-coding-20140508.xlsx or CASME2-coding-20190701.xlsx",
    lower_case_emotion=True,
    # CASME2-ObjectiveClasses.xlsx (MEGC2018): header row 1, Subject as text '01'.
    objective_sheet={
        "subject": ("Subject",),
        "filename": ("Filename",),
        "objective": ("Objective Class", "Objective Classes"),
    },
)

#: SAMM: ``SAMM/006/006_1_2/006_05562.jpg`` (``{subject}_{frame:05d}.jpg``) annotated by
#: ``SAMM_Micro_FACS_Codes_v2.xlsx``, sheet ``MICRO_ONLY``, header on row 14 (rows 1-13 are
#: notes; the header is found, not assumed).
SAMM = AnnotatedRelease(
    dataset="samm",
    subject_folder=re.compile(r"\d{3}"),
    subject_holds=holds_folders_named_after_it,
    subject_example="006, 007, ...",
    columns={
        "subject": ("Subject",),
        "filename": ("Filename",),
        "inducement": ("Inducement Code",),
        "onset": ("Onset Frame",),
        "apex": ("Apex Frame",),
        "offset": ("Offset Frame",),
        "duration": ("Duration",),
        "micro": ("Micro",),
        "action_units": ("Action Units",),
        "emotion": ("Estimated Emotion",),
        "objective": ("Objective Classes",),
        "notes": ("Notes",),
    },
    sheet="MICRO_ONLY",
    annotation_file=re.compile(r"^samm.*(facs|codes).*\.(xlsx|xlsm|csv)$", re.IGNORECASE),
    annotation_example="SAMM_Micro_FACS_Codes_v2.xlsx",
)

#: CAS(ME)^3 part A: ``part_A/spNO.1/b/color/175.jpg`` (a folder per recorded task ``a``..``m``,
#: ``color/`` and the ignored ``depth/``; frames named by their unpadded number) annotated by
#: ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` (or a .csv export), header row 1: Subject
#: (``spNO.1``), Filename (the task letter), Onset, Apex, Offset, AU, Objective class (I-VII),
#: emotion (lower case). One task video holds several samples: the id includes the onset.
CASME3 = AnnotatedRelease(
    dataset="casme3",
    subject_folder=re.compile(r"spNO\.\d+", re.IGNORECASE),
    subject_holds=holds_folder_with("color"),
    subject_example="spNO.1, spNO.2, ...",
    columns={
        "subject": ("Subject",),
        "filename": ("Filename",),
        "onset": ("Onset",),
        "apex": ("Apex",),
        "offset": ("Offset",),
        "action_units": ("AU",),
        "objective": ("Objective class",),
        "emotion": ("emotion",),
    },
    sheet=None,
    annotation_file=re.compile(r"^cas\W*me\W*3.*label.*\.(xlsx|xlsm|csv)$", re.IGNORECASE),
    annotation_example="cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx",
    lower_case_emotion=True,
    frames_folder="color",
    onset_in_id=True,
)

#: The annotated releases by database id.
ANNOTATED_RELEASES: dict[str, AnnotatedRelease] = {r.dataset: r for r in (CASME2, SAMM, CASME3)}
