"""Test data the tests write themselves, shaped like the real files in ../shared/data.

A fresh clone without ../shared still trains, chats and exports on these: the same file names
(``alpaca_en_demo.json``, ``identity.json``, ``mllm_demo.json`` + ``mllm_demo_data/``), the same
formats and row counts the tests rely on, and images drawn with Pillow. Everything is derived from
fixed tables, so the files are identical on every machine.
"""
from __future__ import annotations

import json
from pathlib import Path

CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Egypt", "Cairo"),
            ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Chile", "Santiago"),
            ("Greece", "Athens"), ("Poland", "Warsaw")]
OPPOSITES = [("hot", "cold"), ("tall", "short"), ("early", "late"), ("happy", "sad"), ("light", "dark"),
             ("fast", "slow"), ("open", "closed"), ("full", "empty"), ("strong", "weak"), ("rich", "poor"),
             ("loud", "quiet"), ("hard", "soft")]
COLOURS = [("a banana", "yellow"), ("grass", "green"), ("the sky on a clear day", "blue"), ("snow", "white"),
           ("a ripe tomato", "red"), ("coal", "black"), ("an orange", "orange"), ("a plum", "purple"),
           ("milk", "white"), ("a lemon", "yellow"), ("a strawberry", "red"), ("the sea", "blue")]
IDENTITY_QUESTIONS = ["hi", "hello", "Who are you?", "What is your name?", "Tell me about yourself.",
                      "Who made you?", "Who created you?", "What should I call you?", "Introduce yourself.",
                      "Are you ChatGPT?", "What are you?", "Who developed you?", "Do you have a name?",
                      "Which company built you?", "Who is your author?", "May I know your name?"]


def alpaca_rows() -> list[dict]:
    """60 distinct instruction/response pairs (no duplicates, so an import keeps all of them)."""
    rows = []
    for (country, capital), (word, opposite), (thing, colour) in zip(CAPITALS, OPPOSITES, COLOURS):
        rows += [
            {"instruction": f"What is the capital of {country}?", "input": "",
             "output": f"The capital of {country} is {capital}."},
            {"instruction": "Give the opposite of the word.", "input": word,
             "output": f"The opposite of \"{word}\" is \"{opposite}\"."},
            {"instruction": f"What colour is {thing}?", "input": "", "output": f"{thing[0].upper()}{thing[1:]} is {colour}."},
            {"instruction": f"Write one sentence about {capital}.", "input": "",
             "output": f"{capital} is the capital city of {country} and a place many people visit."},
            {"instruction": "Spell the word backwards.", "input": word, "output": word[::-1]},
        ]
    return rows


def identity_rows() -> list[dict]:
    answers = ["I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?",
               "You may call me {{name}}. I was developed by {{author}} to help you."]
    return [{"instruction": q, "input": "", "output": answers[i % 2]} for i, q in enumerate(IDENTITY_QUESTIONS)]


IMAGE_SCENES = {  # file -> (background, shape colour, shape, question, answer)
    "1.jpg": ((30, 110, 40), (220, 30, 30), "circle", "What is in the picture?", "A red circle on a green field."),
    "2.jpg": ((20, 40, 140), (250, 220, 40), "square", "What do you see?", "A yellow square on a blue background."),
    "3.jpg": ((235, 235, 235), (20, 20, 20), "triangle", "Describe the image.", "A black triangle on a white page."),
}


def draw_image(path: Path, background, colour, shape: str) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), background)
    draw = ImageDraw.Draw(image)
    box = (100, 60, 220, 180)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(160, 50), (90, 190), (230, 190)], fill=colour)
    image.save(path, quality=90)


def mllm_rows() -> list[dict]:
    """6 ShareGPT-style rows with ``<image>`` placeholders and an ``images`` list (3 distinct images),
    the first one a two-turn conversation with two images, as in LLaMA-Factory's mllm_demo."""
    scenes = list(IMAGE_SCENES.items())
    (f1, s1), (f2, s2), (f3, s3) = scenes
    rows = [{"messages": [{"role": "user", "content": f"<image>{s1[3]}"}, {"role": "assistant", "content": s1[4]},
                          {"role": "user", "content": "And this one?<image>"}, {"role": "assistant", "content": s2[4]}],
             "images": [f"mllm_demo_data/{f1}", f"mllm_demo_data/{f2}"]}]
    for name, scene in [(f2, s2), (f3, s3), (f1, s1), (f3, s3)]:
        rows.append({"messages": [{"role": "user", "content": f"<image>{scene[3]}"},
                                  {"role": "assistant", "content": scene[4]}],
                     "images": [f"mllm_demo_data/{name}"]})
    rows.append({"messages": [{"role": "user", "content": "<image>What shape is it?"},
                              {"role": "assistant", "content": f"It is a {s2[2]}."}],
                 "images": [f"mllm_demo_data/{f2}"]})
    return rows


def write_sample_data(folder: Path) -> Path:
    """Write the four sample files into ``folder`` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alpaca_en_demo.json").write_text(json.dumps(alpaca_rows(), indent=1), encoding="utf-8")
    (folder / "identity.json").write_text(json.dumps(identity_rows(), indent=1), encoding="utf-8")
    images = folder / "mllm_demo_data"
    images.mkdir(exist_ok=True)
    for name, (background, colour, shape, _, _) in IMAGE_SCENES.items():
        draw_image(images / name, background, colour, shape)
    (folder / "mllm_demo.json").write_text(json.dumps(mllm_rows(), indent=1), encoding="utf-8")
    return folder
