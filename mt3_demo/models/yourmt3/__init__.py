"""YourMT3+ (Chang et al., MLSP 2024): Perceiver-TF + MoE encoder, 13-channel T5 decoder.

features (segments, spectrogram) · encoder (pre-encoder, Perceiver-TF, MoE) · decoder (channel
memories, multi-channel T5, greedy + KV cache) · tokenizer (vocabulary, programs) · notes (tokens →
notes) · checkpoint (safe .ckpt reading) · model (the network, config from a checkpoint) · adapter (SPEC).
"""
