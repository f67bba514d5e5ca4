"""Every independent random stream of the library, in one place.

Random choices are pure functions of ``(seed, stream, view/epoch, index)`` (:func:`distillery.data.transforms.
uniforms`), so two draws that must be independent need different stream numbers, and a draw that must be
replayed (the teacher-output cache replays the KD teacher views) must use the same one.
"""

IDENTITY = 0  # retrieval: the student's view of the P x K task batch
KD_STUDENT = 1  # retrieval: the student's view of the KD batch
KD_TEACHER = 2  # retrieval: the teacher's view of the KD batch (replayed by the teacher-output cache)
VIEW_1, VIEW_2 = 3, 4  # multi-teacher methods: the two views of a KD batch (student and teachers alike)
CLS = 3  # classification: the one view of a step (student and teacher share it; another trainer than VIEW_1)
FRAME = 5  # video datasets: the frame of each video a KD epoch sees
PCA_FIT = 6  # video datasets: the augmented frames the whitening is fitted on
TASK_MINING = 11  # task losses that draw at random (triplet_random)
S2SD_MINING = 12  # S2SD's target-branch criteria
