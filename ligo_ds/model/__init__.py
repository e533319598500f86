"""The model side: a causal LM's shape and architecture, and its Hugging Face files in and out.

config.py     ModelConfig: a typed view of an HF config.json, one parser per model_type
config_checks.py  what its values must be as the file has them, and the largest model accepted
decoder.py    the decoder, one implementation for every family, switched by ModelConfig
compute.py    how its forward and backward run (the Compute block): checkpointing, the chunked head
              and loss, torch.compile
rope.py       RoPE tables; the scaled kinds from transformers' own functions
families.py   per family, HF weight names <-> ours as tables, and the functions that read them
hf_load.py    HF checkpoints in, in every file layout the Hub serves (load_model, SourceWeights)
hf_save.py    HF checkpoints out, streamed a tensor at a time (write_checkpoint, save_model)
tokenizer.py  tokenizers as AutoTokenizer reads them: eos, fingerprint, the files an export carries
generation.py decoding new tokens from any forward that gives logits (generate, training's samples)
hub.py        Hub ids (ORG/NAME[@REVISION]) -> snapshot directories, online or from the cache
"""
