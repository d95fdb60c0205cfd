import subprocess
import sys

from companion.cli import COMMAND_MODULES, build_parser


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "companion", *args], capture_output=True, text=True, timeout=timeout)


def test_every_command_has_help():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"generate", "evaluate"} <= set(commands)
    for name, sub in commands.items():
        assert sub.format_help().startswith("usage: companion " + name), name
    assert len(COMMAND_MODULES) == len(set(COMMAND_MODULES))


def test_generate_streams_a_chat_reply_and_reports_speed():
    result = run("generate", "--prompt", "Tom has 3 bags with 4 apples in each bag. How many apples does he have?",
                 "--chat", "--no-thinking", "--max-new-tokens", "60")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "\\boxed{" in result.stdout  # the tiny model answers in its trained format
    assert lines[-1].startswith("[") and "tokens/s" in lines[-1]


def test_generate_reports_a_missing_model_folder_clearly():
    result = run("generate", "--model", "no/such/folder/here", "--prompt", "hi")
    assert result.returncode != 0
    assert "model folder not found: no/such/folder/here" in result.stderr
