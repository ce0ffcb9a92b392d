"""The backbone as a visual question answerer: the spatial stage trains it on the text answers
and the spatial benchmark scores it (multiple choice by answer likelihood, numbers generated)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies.backbone import BACKBONE_MARKER, Backbone, image_inputs, left_pad

from .generate import load_images, load_mask


class SpatialVQA(nn.Module):
    """Answers are scored and decoded over the answer vocabulary only (every token of the training
    answers and choices, and the end token): its LM-head rows are the trainable `answer_head`, so
    AdamW never walks the 151k-row head (on a CPU that would double a step); they are written back
    into the head when the backbone is saved."""

    def __init__(self, backbone: Backbone, answer_texts: list[str]):
        super().__init__()
        self.lm, self.family = backbone.model, backbone.family
        self.tokenizer, self.image_processor = backbone.tokenizer, backbone.image_processor
        self.text_vocab_size = backbone.text_vocab_size
        tok = self.tokenizer
        self.pad_id, self.image_token_id = tok.pad_token_id, tok.convert_tokens_to_ids("<|image_pad|>")
        self.end_ids = tuple(tok("<|im_end|>", add_special_tokens=False)["input_ids"])
        ids = sorted({i for t in answer_texts for i in tok(t, add_special_tokens=False)["input_ids"]} | set(self.end_ids))
        self.register_buffer("answer_ids", torch.as_tensor(ids), persistent=False)
        position = torch.full((len(tok),), -1, dtype=torch.long)
        position[self.answer_ids] = torch.arange(len(ids))
        self.register_buffer("answer_position", position, persistent=False)  # token id -> answer_head row
        # the full head gets no gradient from these answers: AdamW skips it
        self.answer_head = nn.Parameter(self.lm.get_output_embeddings().weight.detach()[self.answer_ids].clone())

    def head_to_lm(self) -> None:
        """Write the trained answer rows into the LM head (before saving the backbone)."""
        with torch.no_grad():
            self.lm.get_output_embeddings().weight[self.answer_ids] = self.answer_head.to(self.lm.dtype)

    def head_from_lm(self) -> None:
        """Read the answer rows back from the LM head (after loading the backbone's weights)."""
        with torch.no_grad():
            self.answer_head.copy_(self.lm.get_output_embeddings().weight[self.answer_ids])

    def used_token_ids(self, records: list[dict]) -> set[int]:
        """Every text token id the questions and answers of these records use (what a compact
        checkpoint of a co-trained policy must keep)."""
        ids = {int(i) for i in self.answer_ids}
        for r in records:
            ids.update(self.tokenizer(r["question"], add_special_tokens=False)["input_ids"])
        return ids | set(self._prompt((1,), ""))

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    def _prompt(self, n_tokens: list[int], question: str) -> tuple[int, ...]:
        parts = ["<|im_start|>user\n"]
        for i, n in enumerate(n_tokens):
            parts.append(f"image {i + 1}: <|vision_start|>{'<|image_pad|>' * n}<|vision_end|>\n")
        parts.append(question + "<|im_end|>\n<|im_start|>assistant\n")
        return tuple(self.tokenizer("".join(parts), add_special_tokens=False)["input_ids"])

    def encode(self, samples: list[dict], with_answers: bool = True) -> dict:
        """samples: {"images": [uint8 HxWx3, ...], "question", "answer"} -> left-padded inputs; with
        answers, `answer_mask` marks the answer's tokens (and the end token) as targets."""
        pix, per_image = image_inputs(self.image_processor, [im for s in samples for im in s["images"]])
        seqs, n_answer, k = [], [], 0
        for s in samples:
            prompt = self._prompt(per_image[k:k + len(s["images"])], s["question"])
            k += len(s["images"])
            answer = tuple(self.tokenizer(s["answer"], add_special_tokens=False)["input_ids"]) + self.end_ids if with_answers else ()
            seqs.append(prompt + answer)
            n_answer.append(len(answer))
        input_ids, mask = left_pad(seqs, self.pad_id)
        answer_mask = torch.zeros_like(mask, dtype=torch.bool)
        for b, n in enumerate(n_answer):
            if n:
                answer_mask[b, -n:] = True
        return {"input_ids": input_ids, "attention_mask": mask, **pix, "answer_mask": answer_mask,
                "mm_token_type_ids": (input_ids == self.image_token_id).int()}

    def _inputs(self, batch: dict) -> dict:
        keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
        return {k: batch[k].to(self.device) for k in keys}

    def answer_logprobs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per answer token [n]: its log-probability, the batch row it belongs to, whether greedy
        decoding would emit it.
        Only answer positions meet the LM head (the 151k-row head over every position would dominate)."""
        out = self.lm.model(**self._inputs(batch))
        target = batch["answer_mask"].to(self.device)
        predicts = torch.zeros_like(target)
        predicts[:, :-1] = target[:, 1:]  # position t predicts token t + 1
        hidden = out.last_hidden_state[predicts]
        logits = (hidden @ self.answer_head.to(hidden.dtype).T).float()
        ids = self.answer_position[batch["input_ids"].to(self.device)[target]]
        if (ids < 0).any():
            unknown = batch["input_ids"].to(self.device)[target][ids < 0].unique().tolist()
            raise ValueError(f"answer tokens outside the answer vocabulary: {self.tokenizer.convert_ids_to_tokens(unknown)}")
        logp = F.log_softmax(logits, -1).gather(1, ids[:, None])[:, 0]
        rows = torch.nonzero(target)[:, 0]
        return logp, rows, logits.argmax(-1) == ids

    def forward(self, batch: dict) -> dict:
        logp, _, correct = self.answer_logprobs(batch)
        return {"loss": -logp.mean(), "accuracy": correct.float().mean().detach()}

    @torch.no_grad()
    def choose(self, samples: list[dict]) -> list[str]:
        """Multiple choice: the choice whose answer tokens are most likely."""
        expanded = [{**s, "answer": c} for s in samples for c in s["choices"]]
        logp, rows, _ = self.answer_logprobs(self.encode(expanded))
        totals = torch.zeros(len(expanded), device=logp.device).index_add_(0, rows, logp).cpu().numpy()
        out, k = [], 0
        for s in samples:
            n = len(s["choices"])
            out.append(s["choices"][int(np.argmax(totals[k:k + n]))])
            k += n
        return out

    @torch.no_grad()
    def generate(self, samples: list[dict], max_new_tokens: int = 16) -> list[str]:
        """Greedy decoding over the answer vocabulary (its rows of the head are the answer_head's)."""
        from transformers import LogitsProcessorList

        from policies.vla_model import AllowedTokens

        batch = self.encode(samples, with_answers=False)
        self.head_to_lm()
        ids = self.lm.generate(**self._inputs(batch), max_new_tokens=max_new_tokens, do_sample=False,
                               pad_token_id=self.pad_id, eos_token_id=list(self.end_ids),
                               logits_processor=LogitsProcessorList([AllowedTokens(self.answer_ids)]))
        new = ids[:, batch["input_ids"].shape[1]:]
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]

    def save(self, path: Path) -> None:
        """A Hugging Face model folder (what `model.pretrained=` and `backbone_checkpoint=` load)."""
        self.head_to_lm()
        self.lm.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        (path / BACKBONE_MARKER).write_text(json.dumps({"family": self.family, "text_vocab_size": self.text_vocab_size}))

    def load_weights(self, path: Path) -> None:
        from transformers import AutoModelForImageTextToText

        saved = AutoModelForImageTextToText.from_pretrained(path, dtype=self.lm.dtype)
        self.lm.load_state_dict(saved.state_dict())
        self.head_from_lm()


class SpatialSamples:
    """Records with their images loaded, as the model's encode() takes them; image_size: resize
    the images to the size the policy sees (train.resolution), so tuning and acting see one scale."""

    def __init__(self, root: str | Path, records: list[dict], image_size: int | None = None):
        self.root, self.records, self.image_size = Path(root), records, image_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        images = load_images(self.root, r)
        if self.image_size and images[0].shape[0] != self.image_size:
            from PIL import Image

            size = (self.image_size, self.image_size)
            images = [np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in images]
        return {**r, "images": images, "mask": load_mask(self.root, r)}


def answer_texts(records: list[dict]) -> list[str]:
    """What the answer vocabulary is made of: every answer and choice of these (training) records."""
    return sorted({r["answer"] for r in records} | {c for r in records for c in r["choices"]})


def build_vqa_model(model_cfg: dict, seed: int, train_records: list[dict]):
    from policies.backbone import build_backbone

    return SpatialVQA(build_backbone(model_cfg, [], seed=seed), answer_texts(train_records))
