"""Companion package of the reasoning-model notebooks.

    from companion import load_model, generate
    model, tokenizer = load_model()          # the shipped tiny model; or "Qwen/Qwen3-0.6B"
    [reply] = generate(model, tokenizer, tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 12 * 7?"}], add_generation_prompt=True))
"""
from companion.checkpoint import load_model, save_model
from companion.config import ModelConfig, preset
from companion.generate import GenerationResult, generate
from companion.model import Qwen3Model
from companion.tokenizer import Tokenizer, load_tokenizer

__version__ = "0.1.0"
__all__ = ["GenerationResult", "ModelConfig", "Qwen3Model", "Tokenizer", "generate", "load_model",
           "load_tokenizer", "preset", "save_model"]
