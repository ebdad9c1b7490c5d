"""Tiny random-weight stand-ins for the production models, built from configs at test time.

``tiny_parakeet`` writes a ``.nemo`` file shaped like Parakeet TDT (FastConformer encoder with
8x depthwise-striding subsampling, 128-bin mel features, RNN-T decoder, TDT joint with five
durations, SentencePiece BPE tokenizer); ``tiny_qwen3_tts`` writes a Qwen3-TTS CustomVoice
checkpoint directory (talker, code predictor, 12 Hz speech tokenizer at 24 kHz, byte-level BPE
text tokenizer) with two speakers. Both load through the libraries' real loaders by local path
and produce random tokens/noise: tests assert on shapes, types and behaviour, never on content.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

#: enough text to train both tiny tokenizers
CORPUS = (
    "hello there how are you today the quick brown fox jumps over the lazy dog "
    "what is the weather in paris it is sunny and warm speak slowly please thank you "
    "one two three four five six seven eight nine ten zero yes no maybe good morning"
)

#: the speakers of the tiny Qwen3-TTS checkpoint, as ``config.json`` spells them
QWEN_SPEAKERS = ("ryan", "vivian")
#: codec samples per frame of Qwen3-TTS's 12 Hz speech tokenizer (24 kHz / 12.5 Hz)
QWEN_SAMPLES_PER_FRAME = 1920


def tiny_parakeet(directory: Path) -> Path:
    """Write a Parakeet-shaped TDT model to ``directory/tiny_parakeet_tdt.nemo``; its path."""
    import sentencepiece as spm
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    text = directory / "corpus.txt"
    text.write_text("\n".join(CORPUS.split(" the ")), "utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(directory / "tokenizer"),
        vocab_size=64,
        model_type="bpe",
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
    )
    # NeMo's BPE tokenizer directory wants vocab.txt beside the SentencePiece model.
    pieces = (directory / "tokenizer.vocab").read_text("utf-8").splitlines()
    (directory / "vocab.txt").write_text("".join(p.split("\t")[0] + "\n" for p in pieces), "utf-8")
    durations = [0, 1, 2, 3, 4]
    config = OmegaConf.create(
        {
            "sample_rate": 16_000,
            "model_defaults": {
                "enc_hidden": 64,
                "pred_hidden": 64,
                "joint_hidden": 64,
                "tdt_durations": durations,
                "num_tdt_durations": len(durations),
            },
            "tokenizer": {"dir": str(directory), "type": "bpe"},
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "sample_rate": 16_000,
                "normalize": "per_feature",
                "window_size": 0.025,
                "window_stride": 0.01,
                "window": "hann",
                "features": 128,
                "n_fft": 512,
                "frame_splicing": 1,
                "dither": 1e-5,
                "pad_to": 0,
            },
            "encoder": {
                "_target_": "nemo.collections.asr.modules.ConformerEncoder",
                "feat_in": 128,
                "feat_out": -1,
                "n_layers": 2,
                "d_model": 64,
                "subsampling": "dw_striding",
                "subsampling_factor": 8,
                "subsampling_conv_channels": 32,
                "ff_expansion_factor": 4,
                "self_attention_model": "rel_pos",
                "n_heads": 4,
                "att_context_size": [-1, -1],
                "xscaling": True,
                "untie_biases": True,
                "pos_emb_max_len": 5000,
                "conv_kernel_size": 9,
                "conv_norm_type": "batch_norm",
                "dropout": 0.1,
                "dropout_pre_encoder": 0.1,
                "dropout_emb": 0.0,
                "dropout_att": 0.1,
            },
            "decoder": {
                "_target_": "nemo.collections.asr.modules.RNNTDecoder",
                "normalization_mode": None,
                "random_state_sampling": False,
                "blank_as_pad": True,
                "prednet": {"pred_hidden": 64, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.0},
            },
            "joint": {
                "_target_": "nemo.collections.asr.modules.RNNTJoint",
                "log_softmax": None,
                "preserve_memory": False,
                "fuse_loss_wer": True,
                "fused_batch_size": 4,
                "jointnet": {"joint_hidden": 64, "activation": "relu", "dropout": 0.2},
                "num_extra_outputs": len(durations),
            },
            "decoding": {
                "strategy": "greedy_batch",
                "model_type": "tdt",
                "durations": durations,
                "greedy": {"max_symbols": 10},
            },
            "loss": {
                "loss_name": "tdt",
                "tdt_kwargs": {
                    "fastemit_lambda": 0.0,
                    "clamp": -1.0,
                    "durations": durations,
                    "sigma": 0.02,
                    "omega": 0.1,
                },
            },
            "train_ds": None,
            "test_ds": None,
            # transcribe() reads validation_ds; without use_start_end_token it fails
            "validation_ds": {
                "manifest_filepath": None,
                "sample_rate": 16_000,
                "batch_size": 1,
                "shuffle": False,
                "use_start_end_token": False,
                "num_workers": 0,
            },
        }
    )
    path = directory / "tiny_parakeet_tdt.nemo"
    EncDecRNNTBPEModel(cfg=config).eval().save_to(str(path))
    return path


def tiny_qwen3_tts(directory: Path) -> Path:
    """Write a Qwen3-TTS CustomVoice checkpoint with :data:`QWEN_SPEAKERS` to ``directory``;
    returns ``directory``."""
    import torch
    from qwen_tts.core.models.configuration_qwen3_tts import (
        Qwen3TTSConfig,
        Qwen3TTSSpeakerEncoderConfig,
    )
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration
    from qwen_tts.core.models.processing_qwen3_tts import Qwen3TTSProcessor
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Config,
    )
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Model,
    )
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import EncodecFeatureExtractor, Qwen2TokenizerFast

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|tts_pad|>",
        "<|tts_text_bos|>",
        "<|tts_text_eod|>",
    ]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        [CORPUS, CORPUS.upper(), CORPUS.title()],
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    text_tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
    )
    ids = {s: text_tokenizer.convert_tokens_to_ids(s) for s in specials}
    codebook, groups = 64, 4  # the real model: 2048 codes, 16 groups
    head_dim = 16
    talker = {
        # generate() suppresses the 1024 ids above the codebook except EOS
        "vocab_size": codebook + 1024,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10_000,
        "rope_scaling": {
            "rope_type": "default",
            "type": "default",
            "mrope_section": [4, 2, 2],  # sums to head_dim / 2
            "interleaved": True,
        },
        "num_code_groups": groups,
        "text_hidden_size": 32,
        "text_vocab_size": 512,
        "codec_pad_id": codebook,
        "codec_bos_id": codebook + 1,
        "codec_eos_token_id": codebook + 2,
        "codec_think_id": codebook + 3,
        "codec_nothink_id": codebook + 4,
        "codec_think_bos_id": codebook + 5,
        "codec_think_eos_id": codebook + 6,
        "codec_language_id": {"english": codebook + 10, "chinese": codebook + 11},
        "spk_id": {name: codebook + 20 + i for i, name in enumerate(QWEN_SPEAKERS)},
        "spk_is_dialect": dict.fromkeys(QWEN_SPEAKERS, False),
        "code_predictor_config": {
            "vocab_size": codebook,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": head_dim,
            "max_position_embeddings": 64,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10_000,
            "num_code_groups": groups,
        },
    }
    config = Qwen3TTSConfig(
        talker_config=talker,
        speaker_encoder_config={
            "enc_dim": 32,
            "enc_channels": [32, 32, 32, 32, 96],
            "enc_attention_channels": 16,
            "enc_se_channels": 16,
        },
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_size="0b6",
        tts_model_type="custom_voice",
        im_start_token_id=ids["<|im_start|>"],
        im_end_token_id=ids["<|im_end|>"],
        tts_pad_token_id=ids["<|tts_pad|>"],
        tts_bos_token_id=ids["<|tts_text_bos|>"],
        tts_eos_token_id=ids["<|tts_text_eod|>"],
    )
    config.architectures = ["Qwen3TTSForConditionalGeneration"]
    Qwen3TTSForConditionalGeneration(config).save_pretrained(str(directory))
    # save_pretrained adds keys (model_type, ...) that the speaker encoder config's __init__
    # rejects on load; the published checkpoints carry only the declared ones.
    config_path = directory / "config.json"
    saved = json.loads(config_path.read_text("utf-8"))
    accepted = set(inspect.signature(Qwen3TTSSpeakerEncoderConfig.__init__).parameters)
    saved["speaker_encoder_config"] = {
        k: v for k, v in saved["speaker_encoder_config"].items() if k in accepted
    }
    config_path.write_text(json.dumps(saved), "utf-8")
    Qwen3TTSProcessor(tokenizer=text_tokenizer).save_pretrained(str(directory))
    generation = {
        "do_sample": True,
        "top_k": 50,
        "top_p": 1.0,
        "temperature": 0.9,
        "repetition_penalty": 1.05,
        "subtalker_dosample": True,
        "subtalker_top_k": 50,
        "subtalker_top_p": 1.0,
        "subtalker_temperature": 0.9,
        "max_new_tokens": 40,
    }
    (directory / "generation_config.json").write_text(json.dumps(generation), "utf-8")
    speech = directory / "speech_tokenizer"
    speech_config = Qwen3TTSTokenizerV2Config(
        encoder_config={
            "hidden_size": 32,
            "num_filters": 8,
            "num_residual_layers": 1,
            "upsampling_ratios": [8, 6, 5, 4],
            "codebook_size": codebook,
            "codebook_dim": 32,
            "num_quantizers": groups,
            "num_semantic_quantizers": 1,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": head_dim,
            "intermediate_size": 64,
            "sliding_window": 250,
            "frame_rate": 12.5,
            "sampling_rate": 24_000,
            "use_causal_conv": True,
            "compress": 2,
            "max_position_embeddings": 8000,
            "upsample_groups": 32,  # = hidden_size
            "vector_quantization_hidden_dimension": 32,  # = codebook_dim
        },
        decoder_config={
            "codebook_size": codebook,
            "codebook_dim": 32,
            "hidden_size": 32,
            "latent_dim": 32,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_quantizers": groups,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "decoder_dim": 32,
            "sliding_window": 72,
            "max_position_embeddings": 8000,
        },
        encoder_valid_num_quantizers=groups,
        input_sample_rate=24_000,
        output_sample_rate=24_000,
        decode_upsample_rate=QWEN_SAMPLES_PER_FRAME,
        encode_downsample_rate=QWEN_SAMPLES_PER_FRAME,
    )
    speech_config.model_type = "qwen3_tts_tokenizer_12hz"
    speech_tokenizer = Qwen3TTSTokenizerV2Model(speech_config)
    # Codebooks start as zeros (they are learnt as running sums), which would decode every code
    # to silence; random entries make the tiny decoder produce audible noise.
    with torch.no_grad():
        for name, parameter in speech_tokenizer.named_parameters():
            if name.endswith("_codebook.embedding_sum"):
                parameter.normal_()
    speech_tokenizer.save_pretrained(str(speech))
    EncodecFeatureExtractor(feature_size=1, sampling_rate=24_000).save_pretrained(str(speech))
    return directory
