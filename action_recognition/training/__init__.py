"""The parts of the ``train`` step, shaped like torchvision's reference scripts: :mod:`.setup` (device, seed,
the model and its pretrained backbone), :mod:`.augment`, :mod:`.state` (everything a resumed try needs, saved
and loaded as one), :mod:`.loop` (one epoch, validation), :mod:`.inference` (batched logits, the RGB crop),
:mod:`.tracking` (the fingerprint, MLflow lookups, logging) and :mod:`.card` (the model card).
:mod:`action_recognition.train` puts them together as one step."""
