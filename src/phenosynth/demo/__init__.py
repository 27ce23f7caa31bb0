"""Simulated conditions on real faces (:mod:`phenosynth.demo.dataset`, the ORL faces shipped in
:mod:`phenosynth.demo.orl`) and the end-to-end demo (:mod:`phenosynth.demo.run`)."""

_DATASET_NAMES = frozenset(
    {"build_demo_dataset", "simulate_conditions", "FacePhoto", "DemoDataset", "CONDITIONS", "CHANGES"})


def __getattr__(name: str):  # lazy: building the dataset needs dlib/OpenCV only when called
    if name in _DATASET_NAMES:
        from phenosynth.demo import dataset

        return getattr(dataset, name)
    raise AttributeError(name)
