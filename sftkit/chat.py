"""``sftkit chat MODEL_OR_RUN``: talk to a model, with the prompt rendered as in training.

What you type becomes an ``Example`` rendered by the run's template and options (a plain model:
its tokenizer's chat template, ``chat_template``), exactly as ``sftkit eval`` renders a data
row: the typed text is the instruction, or, when the run's data had a constant instruction
(its spec's ``instruction``, or ``--instruction``), the input to it. The answer is decoded
greedily and stops where eval stops (EOS, the template's end of turn, ``--max-new-tokens``),
so ``sftkit chat RUN --prompt X`` prints what ``sftkit eval`` generates for a row with
instruction X. Tokens are shown as they come. ``--compare OTHER`` answers with a second model
on the same prompt, side by side. Multi-turn templates keep the conversation (``/reset``
starts again); with a constant instruction every message is a new input, answered on its own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import click

from sftkit.cli import parse_key_values
from sftkit.errors import UsageError

PROBE = "\ue000sftkit-earlier-turn\ue001"  # private-use characters: in no template


@dataclass
class ChatModel:
    """One model in the chat: its name, weights, tokenizer, run description and conversation."""

    name: str
    model: Any
    tokenizer: Any
    info: dict | None
    history: list = field(default_factory=list)  # sftkit.Message turns so far (user, assistant, ...)


@dataclass(frozen=True)
class ChatSettings:
    """How prompts are rendered and answered."""

    instruction: str | None = None  # a constant instruction: the typed text is its input
    system: str = ""
    max_new_tokens: int = 128
    keep_history: bool = True


@click.command("chat")
@click.argument("model", metavar="MODEL_OR_RUN")
@click.option("--compare", metavar="MODEL_OR_RUN", help="A second model that answers the same prompt, shown beside.")
@click.option("--prompt", "prompt", metavar="TEXT", help="Answer TEXT once and exit (scriptable); otherwise interactive.")
@click.option("--template", metavar="NAME", help="Prompt template (default: the run's; for a model, chat_template).")
@click.option("--template-option", "template_options", multiple=True, metavar="KEY=VALUE", help="A template option.")
@click.option("--instruction", metavar="TEXT", default=None,
              help="A constant instruction, your text its input (default for a run: its data's constant "
                   "instruction; --instruction '' for none).")
@click.option("--system", metavar="TEXT", default="", help="A system message for every prompt.")
@click.option("--max-new-tokens", metavar="N", type=click.IntRange(min=1), default=None,
              help="Generation budget (default as in eval: 16 for a classification run, 128 otherwise).")
@click.option("--no-history", is_flag=True, help="Answer every message on its own, even with a multi-turn template.")
@click.option("--json", "as_json", is_flag=True, help="With --prompt: print the prompt and the answers as JSON.")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model folder (off by default).")
def command(model, compare, prompt, template, template_options, instruction, system, max_new_tokens, no_history,
            as_json, trust_remote_code):
    """Chat with a model or a run folder; prompts rendered exactly as in training.

    \b
      sftkit chat runs/demo --compare smollm2-135m
      sftkit chat runs/demo --prompt "Shares rose 5% after the results."
    Type /reset to start a new conversation, /exit (or Ctrl-D) to leave.
    """
    from sftkit.console import err_console, plain

    if as_json and prompt is None:
        raise UsageError("--json needs --prompt", hint="sftkit chat MODEL --prompt TEXT --json")
    check_run_folders(model, compare)  # a damaged run folder is one message before any model loads
    template, options = chat_template_for(model, template, parse_key_values(template_options, "--template-option"))
    models = [load_chat_model(model, trust_remote_code)]
    encoder, settings, notes = chat_setup(models[0], template, options, instruction, system, max_new_tokens,
                                          no_history)
    if compare:
        models.append(load_chat_model(compare, trust_remote_code))
    for note in notes:
        err_console.print(plain(note, "dim"))
    if prompt is not None:
        answers = [(m, answer(m, encoder, prompt, settings)) for m in models]
        print_answers(prompt, encoder, settings, answers, as_json)
        return
    interactive(models, encoder, settings)


# -- set-up ------------------------------------------------------------------------------------------

def chat_template_for(model: str, template: str | None, options: dict) -> tuple[str, dict]:
    """The template and options to render with: as given, else a run folder's own, else the
    model's chat template; checked (name and options) before any model loads."""
    from sftkit.pipeline import Encoder
    from sftkit.runs import is_run_dir, read_run

    if template is None:
        info = read_run(model) if is_run_dir(model) else {}
        template = info.get("template") or "chat_template"
        options = options or dict(info.get("template_options") or {})
    Encoder.build(template=template, template_options=options)  # an unknown name or option: exit 2 here
    return template, options


def check_run_folders(*names: str | None) -> None:
    """Check every run folder among ``names`` (``sftkit.runs.open_run``): a damaged one is exit 2."""
    from sftkit.runs import is_run_dir, open_run

    for name in names:
        if name and is_run_dir(name):
            open_run(name)


def load_chat_model(name: str, trust_remote_code: bool = False) -> ChatModel:
    """Load a model or a run folder as ``sftkit eval`` does (a LoRA adapter merged)."""
    from sftkit.console import err_console, plain
    from sftkit.runs import load_for_inference

    err_console.print(plain(f"loading {name}", "dim"))
    model, tokenizer, info = load_for_inference(name, trust_remote_code=trust_remote_code)
    return ChatModel(str(name), model, tokenizer, info)


def chat_setup(first: ChatModel, template: str, options: dict, instruction: str | None, system: str,
               max_new_tokens: int | None, no_history: bool) -> tuple[Any, ChatSettings, list[str]]:
    """The encoder (template, options, the first model's tokenizer) and the chat settings,
    defaulting to the run's own; and notes on what was chosen."""
    from sftkit.eval.engine import DEFAULT_MAX_NEW_TOKENS, FALLBACK_MAX_NEW_TOKENS
    from sftkit.pipeline import Encoder

    info = first.info or {}
    spec = info.get("spec") or {}
    notes = []
    if template == "chat_template" and not getattr(first.tokenizer, "chat_template", None):
        raise UsageError(f"{first.name} has no chat template", hint="choose one with --template (e.g. chatml)")
    encoder = Encoder.build(template=template, template_options=options).with_tokenizer(first.tokenizer)
    if instruction is None:
        instruction = spec.get("instruction") or None
        if instruction:
            notes.append(f"prompts carry the run's constant instruction {instruction!r}; your text is its input "
                         f"(--instruction '' to type the whole prompt)")
    task = spec.get("task") or "generation"
    keep = not no_history and not instruction and renders_history(encoder)
    if not keep and not no_history and not instruction:
        notes.append(f"template {template!r} renders one turn: every message is answered on its own")
    settings = ChatSettings(instruction=instruction or None, system=system or spec.get("system") or "",
                            max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS.get(task, FALLBACK_MAX_NEW_TOKENS),
                            keep_history=keep)
    return encoder, settings, notes


def renders_history(encoder: Any) -> bool:
    """True when the template renders earlier turns of a conversation into the prompt."""
    from sftkit import Example, Message

    probe = Example(messages=[Message("user", PROBE), Message("assistant", "a"), Message("user", "b"),
                              Message("assistant", "")])
    try:
        return PROBE in encoder.prompt(probe)
    except Exception:  # a template that refuses conversations keeps none
        return False


def example_for(text: str, history: list, settings: ChatSettings) -> Any:
    """The Example a typed message becomes (with the conversation so far, if kept)."""
    from sftkit import Example, Message

    if not settings.keep_history or not history:
        if settings.instruction:
            return Example(instruction=settings.instruction, input=text, system=settings.system)
        return Example(instruction=text, system=settings.system)
    system = [Message("system", settings.system)] if settings.system else []
    return Example(messages=system + list(history) + [Message("user", text), Message("assistant", "")])


# -- answering -----------------------------------------------------------------------------------------

def answer(chat: ChatModel, encoder: Any, text: str, settings: ChatSettings,
           on_text: Callable[[str], None] | None = None) -> Any:
    """The greedy answer of one model to ``text`` (an ``sftkit.generate.Generation``), streamed
    to ``on_text`` as it grows; the conversation is extended when it is kept."""
    from sftkit import Message
    from sftkit.pipeline import end_of_turn

    example = example_for(text, chat.history, settings)
    prompt = encoder.prompt(example)
    ends = [end_of_turn(encoder.segments(example))]
    generation = generate_one(chat.model, chat.tokenizer, prompt, ends, settings.max_new_tokens, on_text)
    if settings.keep_history:
        chat.history += [Message("user", text), Message("assistant", generation.text.strip())]
    return generation


def generate_one(model: Any, tokenizer: Any, prompt: str, end_texts: list[str], max_new_tokens: int,
                 on_text: Callable[[str], None] | None = None) -> Any:
    """One prompt decoded greedily with the stops and options of ``sftkit.generate.generate``
    (EOS and end-of-turn ids, longer end texts as stop strings), streaming the text so far."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    from sftkit.generate import Generation, stops_for

    stops = stops_for(tokenizer, end_texts)
    ids = tokenizer([prompt], add_special_tokens=True, return_tensors="pt")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops.eos_ids or (0,))[0]
    options = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id,
                   eos_token_id=list(stops.token_ids) or None, temperature=None, top_p=None, top_k=None)
    if stops.strings:
        options.update(stop_strings=list(stops.strings), tokenizer=tokenizer)

    class Stream(BaseStreamer):
        def __init__(self) -> None:
            self.new: list[int] = []
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # generate hands the prompt over first
                self.prompt_seen = True
                return
            self.new.extend(int(v) for v in value.reshape(-1).tolist())
            if on_text is not None:
                on_text(_cut(tokenizer, self.new, stops)[0])

        def end(self) -> None:
            pass

    model.eval()
    with torch.inference_mode():
        output = model.generate(input_ids=ids["input_ids"].to(model.device),
                                attention_mask=ids["attention_mask"].to(model.device), streamer=Stream(), **options)
    # an encoder-decoder's output is the decoder side alone, after its start token
    new = output[0, 1 if model.config.is_encoder_decoder else ids["input_ids"].shape[1]:].tolist()
    text, kept, stopped = _cut(tokenizer, new, stops)
    if stopped is None:
        stopped = "max_new_tokens" if len(kept) >= max_new_tokens else "eos"
    return Generation(text=text, tokens=len(kept), stopped=stopped, token_ids=tuple(kept))


def _cut(tokenizer: Any, ids: list[int], stops: Any) -> tuple[str, list[int], str | None]:
    """The text before the first stop (as ``sftkit.generate`` cuts it), the ids kept, and why it stopped."""
    kept, stopped = list(ids), None
    for position, token in enumerate(kept):
        if token in stops.token_ids:
            stopped = "eos" if token in stops.eos_ids else "end_of_turn"
            kept = kept[:position]
            break
    text = tokenizer.decode(kept, skip_special_tokens=True)
    for stop in stops.strings:
        cut = text.find(stop)
        if cut >= 0:
            text, stopped = text[:cut], "end_of_turn"
    return text, kept, stopped


# -- showing -------------------------------------------------------------------------------------------

def answers_view(answers: list[tuple[str, str]], prompt: str | None = None) -> Any:
    """The answers side by side: one column per model, headed by its name (the prompt above)."""
    from rich import box
    from rich.table import Table

    from sftkit.console import plain

    table = Table(box=box.ROUNDED, expand=True, show_lines=False, title_justify="left",
                  title=plain(f"> {prompt}", "bold") if prompt is not None else None)
    for name, _ in answers:
        table.add_column(plain(name), ratio=1, overflow="fold")
    table.add_row(*[plain(text) for _, text in answers])
    return table


def print_answers(prompt: str, encoder: Any, settings: ChatSettings, answers: list, as_json: bool) -> None:
    """``--prompt``: one model's answer as plain text, two side by side, or everything as JSON."""
    from sftkit.console import console, plain

    if as_json:
        rendered = encoder.prompt(example_for(prompt, [], settings))
        payload = {"prompt": prompt, "rendered_prompt": rendered, "max_new_tokens": settings.max_new_tokens,
                   "answers": [{"model": m.name, "text": g.text.strip(), "tokens": g.tokens, "stopped": g.stopped}
                               for m, g in answers]}
        console.print(plain(json.dumps(payload, ensure_ascii=False, indent=2)), soft_wrap=True)
    elif len(answers) == 1:
        console.print(plain(answers[0][1].text.strip()), soft_wrap=True)
    else:
        console.print(answers_view([(m.name, g.text.strip()) for m, g in answers], prompt))


def interactive(models: list[ChatModel], encoder: Any, settings: ChatSettings) -> None:
    """Read a message, stream every model's answer (side by side), until /exit or end of input."""
    from rich.live import Live

    from sftkit.console import console, err_console, plain

    err_console.print(plain("type a message; /reset starts a new conversation, /exit leaves", "dim"))
    while True:
        try:
            text = console.input("[bold cyan]you>[/] ")
        except EOFError:
            console.print()
            return
        command = text.strip().lower()
        if command in ("/exit", "/quit"):
            return
        if command == "/reset":
            for chat in models:
                chat.history.clear()
            err_console.print(plain("new conversation", "dim"))
            continue
        if not text.strip():
            continue
        shown = [[chat.name, ""] for chat in models]
        with Live(answers_view(shown), console=console, refresh_per_second=12, transient=False) as live:
            for index, chat in enumerate(models):
                def update(partial: str, index: int = index) -> None:
                    shown[index][1] = partial
                    live.update(answers_view(shown))

                generation = answer(chat, encoder, text, settings, on_text=update)
                update(generation.text.strip())
