"""The embedded SIMULATED demo dataset (:mod:`phenosynth.demo.dataset`) and the end-to-end demo."""


def __getattr__(name: str):  # lazy: building the dataset needs dlib/OpenCV only when called
    if name in {"build_demo_dataset", "DemoDataset", "CONDITIONS", "CHANGES"}:
        from phenosynth.demo import dataset

        return getattr(dataset, name)
    raise AttributeError(name)
