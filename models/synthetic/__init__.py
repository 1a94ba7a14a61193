"""Everything specific to the synthetic camera world, which the general model does not import: its closed
vocabulary (`vocabulary`), the readers of the whole memory that the default profile plugs in
(`readers`: `EventLocator`, `SequenceReader`) and their fitting (`fit`), the training recipe's clips, question
mix and training-only probes (`clips`, `probes`, `recipe`), and the evaluation on held-out worlds (`evaluate`).

The world itself, as a video source with ground truth, is `stream/synth.py` and `stream/questions.py`."""
