"""Helpers to write template notebooks from Python, plus the cells every notebook shares.

Notebooks are generated (``python templates/_build/build.py``) so that the plumbing cells
(tracking, timing, results file) have one source, and they are committed clean: no outputs, no
execution counts. ``build.py --check`` fails when a committed notebook differs from its source.
"""

from __future__ import annotations

import textwrap

import nbformat
from nbformat import NotebookNode

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def _source(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def md(text: str) -> NotebookNode:
    return nbformat.v4.new_markdown_cell(_source(text))


def code(text: str, *tags: str, hidden: bool = False) -> NotebookNode:
    """A code cell; ``hidden`` collapses its source in JupyterLab (plumbing, not the lesson)."""
    cell = nbformat.v4.new_code_cell(_source(text))
    if tags:
        cell.metadata["tags"] = list(tags)
    if hidden:
        cell.metadata["jupyter"] = {"source_hidden": True}
    return cell


def parameters(text: str) -> NotebookNode:
    """The papermill parameters cell (tag ``parameters``)."""
    return code(text, "parameters")


def notebook(cells: list[NotebookNode]) -> NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index:02d}"  # stable ids keep regenerated notebooks byte-identical
    nb.cells = cells
    return nb


def engineer_import(slug: str, what: str) -> NotebookNode:
    """A course's first code cell: import the data generator of its engineer template."""
    return code(
        f"""
        # The {what} lives in the engineer template next to this course.
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path.cwd().parent / "{slug}"))
        """
    )


def setup(imports: str, torch_setup: bool = True, markdown: bool = True) -> NotebookNode:
    """Imports, timers, threads and device. ``imports`` adds the notebook's own imports."""
    lines = [
        "import json",
        "import logging",
        "import os",
        "import sys",
        "import tempfile",
        "import time",
        "import warnings",
        "from contextlib import contextmanager",
        "from pathlib import Path",
        "",
        _source(imports),
        f"from IPython.display import Image, {'Markdown, ' if markdown else ''}display",
        "",
        "%matplotlib inline",
        "started = time.perf_counter()",
        'warnings.filterwarnings("ignore", module="mlflow")',
        "plt.rcParams.update(",
        '    {"figure.dpi": 100, "figure.constrained_layout.use": True, "axes.grid": True,',
        '     "grid.alpha": 0.3}',
        ")",
        "rng = np.random.default_rng(seed)",
    ]
    if torch_setup:
        lines += [
            "torch.set_num_threads(cpu_threads)",
            "torch.manual_seed(seed)",
            'if device_name == "auto":',
            '    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")',
            "else:",
            "    device = torch.device(device_name)",
        ]
    return code("\n".join(lines))


TRACKING = code(
    '''
    # Workbench plumbing: MLflow tracking and the time it costs (expand to read).
    t0 = time.perf_counter()
    import mlflow  # noqa: E402 (imported here to time it)

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    timings = {"mlflow_import_s": time.perf_counter() - t0, "mlflow_s": 0.0}


    @contextmanager
    def mlflow_timer():
        """Adds the time spent in MLflow calls to timings["mlflow_s"]."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            timings["mlflow_s"] += time.perf_counter() - t0


    def local_store() -> tuple[str, str]:
        """No tracking server configured: a SQLite store in ./mlruns next to the results."""
        folder = (Path(results_path).resolve().parent if results_path else Path.cwd()) / "mlruns"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


    figure_dir = Path(tempfile.mkdtemp(prefix="figures-"))


    def show(fig, name: str) -> None:
        """Render a figure once: shown in the notebook and report, logged to MLflow at the end."""
        path = figure_dir / f"{name}.png"
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        display(Image(filename=str(path)))


    with mlflow_timer():
        if os.environ.get("MLFLOW_TRACKING_URI"):  # set by the workbench in every server and job
            mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
            # experiments belong to their creator: keep each user's under their own name
            owner = os.environ.get("JUPYTERHUB_USER", "")
            if owner and "/" not in mlflow_experiment:
                mlflow_experiment = f"{owner}/{mlflow_experiment}"
        else:
            uri, artifacts = local_store()
            mlflow.set_tracking_uri(uri)
            if mlflow.get_experiment_by_name(mlflow_experiment) is None:
                mlflow.create_experiment(mlflow_experiment, artifact_location=artifacts)
        mlflow.set_experiment(mlflow_experiment)
        run = mlflow.start_run()
    ''',
    hidden=True,
)


def finish(template: str) -> NotebookNode:
    """End the MLflow run, write the results JSON and show where the run lives."""
    return code(
        f'''
        with mlflow_timer():
            mlflow.end_run()
        timings["total_s"] = time.perf_counter() - started
        results = {{
            "template": "{template}",
            "python": sys.executable,
            "parameters": params,
            "metrics": metrics,
            "timings": timings,
            "mlflow": {{
                "run_id": run.info.run_id,
                "experiment_id": run.info.experiment_id,
                "tracking_uri": mlflow.get_tracking_uri(),
            }},
        }}
        if results_path:
            Path(results_path).parent.mkdir(parents=True, exist_ok=True)
            Path(results_path).write_text(json.dumps(results, indent=2, default=float))
        print(f"MLflow run {{run.info.run_id}} in experiment '{{mlflow_experiment}}'.")
        print(f"Notebook time {{timings['total_s']:.1f}} s, of which MLflow {{timings['mlflow_s']:.2f}} s.")
        ''',
        hidden=True,
    )


def log_history_cell() -> NotebookNode:
    """A helper that logs a list of per-epoch dicts in one request."""
    return code(
        '''
    def log_history(history: list[dict[str, float]]) -> None:
        """Per-epoch metrics in a single MLflow request (one HTTP call, not one per value)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, step)
            for step, row in enumerate(history)
            for key, value in row.items()
        ]
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=batch)
    ''',
        hidden=True,
    )


def parameter_names(source: str) -> list[str]:
    """Names assigned in a parameters cell source (one ``name = value  # comment`` per line)."""
    lines = [line for line in _source(source).splitlines() if "=" in line]
    return [line.split("=")[0].split(":")[0].strip() for line in lines]


def log_params(source: str) -> NotebookNode:
    """Collect the parameters into ``params`` and log them (results_path is not a parameter of
    the experiment, so it is left out)."""
    names = [n for n in parameter_names(source) if n not in ("results_path", "mlflow_experiment")]
    body = "\n".join(f"    {name}={name}," for name in names)
    return code(
        f"params = dict(\n{body}\n)\nwith mlflow_timer():\n    mlflow.log_params(params)",
        hidden=True,
    )
