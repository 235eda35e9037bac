"""The tokenizer stage: every face of a corpus to 256 VQGAN codes, in resumable WebDataset shards.

vqgan            the taming VQGAN (config + model) and `encode_batch`, how every face is encoded
vqgan_files      safe loading of VQGAN checkpoints (no code runs) and the safetensors export
config           TokenizeConfig, the settings of `tokenize-images` (light to import)
images           decoding, cropping and resizing a face (one code path for tokenize and generate)
shards           the shard layout: the one writer and reader of SHARDS/
tokenize_images  the `tokenize-images` command
preview          the `preview` command: faces, codes and VQGAN reconstructions as a page
"""
