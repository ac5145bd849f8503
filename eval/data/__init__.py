"""Safety benchmarks: what a loader returns (:mod:`.base`), leak-free splits (:mod:`.splits`),
the embedded sample set (:mod:`.sample`), VSCBench (:mod:`.vscbench`, :mod:`.vscbench_twins`),
image renderers (:mod:`.render`) and image checks (:mod:`.image_check`)."""
