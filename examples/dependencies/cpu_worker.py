"""Two CPU endpoints: one with the data-science stack, one with no dependencies at all.

Run it directly (no server, no API key):

    python examples/dependencies/cpu_worker.py

The first run resolves the pins with uv and builds one environment (seconds, once); later runs
reuse it and start a worker in well under a second.
"""

import asyncio

from runpod_flash import CpuInstanceType, Endpoint


@Endpoint(
    name="deps_data_science",
    cpu=CpuInstanceType.CPU3C_2_4,
    workers=(0, 3),
    dependencies=[
        "pandas==2.1.3",  # exact pin: reproducible
        "numpy==1.26.2",
        "scipy>=1.11.0",  # a minimum version
        "matplotlib",  # the newest release that fits
    ],
)
async def summarize(input_data: dict) -> dict:
    """Column statistics with pandas, a t-test with scipy, and the versions that ran."""
    import matplotlib
    import numpy as np
    import pandas as pd
    import scipy
    from scipy import stats

    rows = input_data.get("rows", [[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    frame = pd.DataFrame(rows, columns=["a", "b"])
    t_stat, p_value = stats.ttest_ind(frame["a"], frame["b"])
    return {
        "mean": frame.mean().round(6).to_dict(),
        "total": float(np.asarray(rows).sum()),
        "t_test": {"t": round(float(t_stat), 6), "p": round(float(p_value), 6)},
        "versions": {
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "matplotlib": matplotlib.__version__,
        },
    }


@Endpoint(name="deps_none", cpu=CpuInstanceType.CPU3C_1_2, workers=(0, 3))
async def word_stats(input_data: dict) -> dict:
    """Only the standard library: the fastest cold start."""
    import re
    import sys

    text = input_data.get("text", "")
    return {
        "words": len(text.split()),
        "characters": len(text),
        "capitals": sum(c.isupper() for c in text),
        "has_digits": bool(re.search(r"\d", text)),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


async def main() -> None:
    print("data science:", await summarize({"rows": [[1, 2], [3, 4], [5, 7]]}))
    print("no dependencies:", await word_stats({"text": "Hello World 123"}))


if __name__ == "__main__":
    asyncio.run(main())
