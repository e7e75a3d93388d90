"""A tiny local `evaluate` metric for sftkit's tests: per-example character overlap, and a
corpus length ratio (the total prediction length over the total reference length)."""
import datasets
import evaluate


class CharOverlap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="character-set overlap per example, and the corpus length ratio",
            citation="",
            inputs_description="predictions and references: lists of strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        overlap = [len(set(p) & set(r)) / max(len(set(r)), 1) for p, r in zip(predictions, references)]
        ratio = sum(len(p) for p in predictions) / max(sum(len(r) for r in references), 1)
        return {"overlap": overlap, "length_ratio": ratio}
