"""Throughput of Presidio's predefined pattern recognizers on the criterion bench's texts.

Recognizers are instantiated directly and called with nlp_artifacts=None, so no spaCy
model is loaded. Usage: python presidio_bench.py TEXT_FILE [TEXT_FILE ...]
One process, one thread (one core). Prints one line per text and recognizer set.
"""
import importlib.metadata
import statistics
import sys
import time

from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)

# Pattern (regex + validation) recognizers covering our default PII types.
PATTERN = [
    EmailRecognizer(),
    UsSsnRecognizer(),
    CreditCardRecognizer(),
    IbanRecognizer(),
    IpRecognizer(),
    UrlRecognizer(),
]
# PhoneRecognizer is not regex-based: it wraps the `phonenumbers` library's matcher.
WITH_PHONE = PATTERN + [PhoneRecognizer()]


def run(recognizers, text):
    n = 0
    for r in recognizers:
        n += len(r.analyze(text, r.supported_entities, nlp_artifacts=None))
    return n


def measure(recognizers, text, min_seconds=3.0):
    run(recognizers, text)  # warm-up (regex compilation caches)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 5:
        t0 = time.perf_counter()
        found = run(recognizers, text)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), found, len(times)


def main():
    ver = importlib.metadata.version("presidio-analyzer")
    print(f"presidio-analyzer {ver}, python {sys.version.split()[0]}")
    for path in sys.argv[1:]:
        data = open(path, "rb").read()
        text = data.decode("utf-8")
        for name, recs in [("pattern", PATTERN), ("pattern+phone", WITH_PHONE)]:
            t, found, iters = measure(recs, text)
            mbs = len(data) / t / 1e6
            mibs = len(data) / t / (1 << 20)
            print(
                f"{path}\t{len(data)} B\t{name}\t{', '.join(type(r).__name__ for r in recs)}\t"
                f"median {t * 1e3:.3f} ms over {iters} runs\t{mbs:.2f} MB/s ({mibs:.2f} MiB/s)\t"
                f"{found} results"
            )
        for r in WITH_PHONE:
            t, found, iters = measure([r], text, min_seconds=1.0)
            print(f"{path}\t  alone: {type(r).__name__}\t{len(data) / t / 1e6:.2f} MB/s\t{found} results")


if __name__ == "__main__":
    main()
