"""The fine-tuned ranker pipeline (``collm-nas finetune``): LM-Searcher's instruction tuning of a local model
on the ranker's own samples.

* :mod:`.data`: reading and splitting the samples ``collm-nas export-trajectories`` writes;
* :mod:`.train`: LoRA fine-tuning with transformers + peft (resumable, seeded, held-out pick accuracy);
* :mod:`.gguf_export`: the merged model written as a GGUF file the local llama.cpp server serves.

It imports transformers, peft and gguf (the ``finetune`` extra) only when it trains or exports.
"""
