"""Classical IMDb baselines on the recipe's own validation split (the anchors of configs/imdb.yaml).

The same reviews, split and cleaning as ``transformer-tf train configs/imdb.yaml``
(:func:`~transformer_tf.data.imdb.split_validation` with the config's fraction and split_seed,
:func:`~transformer_tf.data.review_tokenizer.clean_text`, whitespace words and bigrams), then scikit-learn:

* ``nb_lr``: NBSVM's naive-Bayes log-count ratios (binary features, smoothing 1) scaling a
  logistic regression (Wang & Manning 2012; liblinear, C = 1);
* ``binary_lr``: the same logistic regression on the unscaled binary features (C = 0.3);
* ``tfidf_lr``: sublinear tf-idf (min_df 2), logistic regression, C = 10;
* ``mnb``: the naive-Bayes ratios alone (the sign of their sum over a review's distinct tokens).

Needs scikit-learn (``pip install -e '.[bench]'``) and an unpacked ``aclImdb`` folder::

    .venv/bin/python benchmarks/imdb_baselines.py --data /data/aclImdb \\
        [--max-features 80000,0] [--output benchmarks/results/imdb_baselines.json]

``--max-features`` lists vocabulary sizes to try, the most frequent n-grams first; 0 means all.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from transformer_tf.data.imdb import load_imdb_directory, split_validation
from transformer_tf.data.review_tokenizer import clean_text

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "imdb.yaml"


def naive_bayes_ratios(features, labels, smoothing: float = 1.0) -> np.ndarray:
    """log(p(t | positive) / p(t | negative)) from binary document-term counts."""
    positive = smoothing + np.asarray(features[labels == 1].sum(axis=0)).ravel()
    negative = smoothing + np.asarray(features[labels == 0].sum(axis=0)).ravel()
    return np.log((positive / positive.sum()) / (negative / negative.sum()))


def main() -> None:
    from scipy.sparse import diags
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="an unpacked aclImdb folder")
    parser.add_argument("--max-features", default="80000,0", help="comma-separated; 0: all")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    data = yaml.safe_load(CONFIG.read_text())["data"]
    start = time.perf_counter()
    reviews = load_imdb_directory(args.data, splits=("train",))["train"]
    train, validation = split_validation(reviews, data["validation_fraction"], data["split_seed"])
    train_texts = [clean_text(t) for t in train.texts]
    validation_texts = [clean_text(t) for t in validation.texts]
    y_train, y_validation = train.labels, validation.labels
    ngrams = (1, data["ngrams"])
    results = []

    def record(method: str, accuracy: float, features: int) -> None:
        results.append({"method": method, "features": features, "accuracy": round(accuracy, 4)})
        print(
            f"{method:<10} features={features:>9}  validation accuracy {accuracy:.4f}", flush=True
        )

    for limit in (int(v) for v in args.max_features.split(",")):
        counts = CountVectorizer(
            ngram_range=ngrams,
            token_pattern=r"[^ ]+",  # the texts are cleaned: tokens are separated by spaces
            lowercase=False,
            binary=True,
            max_features=limit or None,
        )
        x_train = counts.fit_transform(train_texts)
        x_validation = counts.transform(validation_texts)
        size = x_train.shape[1]
        ratios = naive_bayes_ratios(x_train, y_train)
        scale = diags(ratios)
        nb_lr = LogisticRegression(C=1.0, solver="liblinear", dual=True, max_iter=1000)
        nb_lr.fit(x_train @ scale, y_train)
        record("nb_lr", nb_lr.score(x_validation @ scale, y_validation), size)
        binary = LogisticRegression(C=0.3, solver="liblinear", dual=True, max_iter=1000)
        binary.fit(x_train, y_train)
        record("binary_lr", binary.score(x_validation, y_validation), size)
        record("mnb", float(((x_validation @ ratios > 0) == y_validation).mean()), size)
    tfidf = TfidfVectorizer(
        ngram_range=ngrams, token_pattern=r"[^ ]+", lowercase=False, sublinear_tf=True, min_df=2
    )
    x_train = tfidf.fit_transform(train_texts)
    tfidf_lr = LogisticRegression(C=10.0, solver="liblinear", max_iter=1000).fit(x_train, y_train)
    record(
        "tfidf_lr",
        tfidf_lr.score(tfidf.transform(validation_texts), y_validation),
        x_train.shape[1],
    )
    print(f"{time.perf_counter() - start:.0f} s", flush=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        summary = {"validation_examples": len(validation), "split_seed": data["split_seed"]}
        args.output.write_text(json.dumps({**summary, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
