"""Fixtures and a reward shared by the GRPO trainer tests (imported by the test modules that use them)."""
import pytest
import torch

from companion.rl import RewardFunction
from companion.rl.toy import toy_problems, toy_tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def problems():
    return toy_problems(count=12)


def varied_reward(batch):
    """A reward with spread in every group of a random model: the digits' share of the text."""
    return [sum(ch.isdigit() for ch in text) / max(1, len(text)) + 0.01 * (len(text) % 7) for text in batch.texts]


REWARDS = [RewardFunction("digits", varied_reward, 1.0)]
