"""One family for every error a user can cause or fix: the CLI, the app, the batch driver and the predictor
catch `RemixerError` and show its message, never a traceback.

Each part raises its own subclass, so a message always says which part failed and callers need to know
one class. Every class of the family (tests/test_structure.py checks this list against the code):

- request.RequestError: invalid inputs (every problem listed, with what is accepted)
- manifest.ManifestError: a batch manifest with bad rows (every row's problems)
- batch.BatchError: a batch that cannot run (Ray missing or unreachable, workers dying)
- audio.AudioError: bad or unreadable audio
- separation.SeparationError: a demucs checkpoint it cannot use
- rhythm.RhythmError: an All-In-One checkpoint it cannot use
- chords.ChordError: a chord label it cannot read
- keytempo.KeyTempoError: a tempo the song cannot take
- musicgen.GenerationError: a MusicGen-Chord checkpoint or model_version it cannot serve
- decoding.DecodingError: a decode loop that cannot run as configured
- mbd.MBDError: a Multi-Band Diffusion checkpoint it cannot use
- checkpoints.CheckpointError: a checkpoint that is missing, unreadable or holds what it may not
- weights.WeightsError: a model file that is missing, unreachable or corrupt
- download.DownloadError: a download that failed (network, checksum)
- device.DeviceError: a device that was asked for and is not there
- pipeline.OutOfGPUMemory: a request larger than the GPU's memory (the next one runs as usual)
- app.Cancelled: the user pressed Cancel on the page
"""


class RemixerError(ValueError):
    """A request or a setup the product cannot serve, explained for the user."""
