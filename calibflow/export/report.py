"""The report page of a calibration: ``report.md`` and ``report.html`` linking every published file."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence

from calibflow.io.store import atomic_path


def write_report(workdir: str, title: str, files: Sequence[str], summary: Sequence[str] = ()) -> list[str]:
    """``report.md`` and ``report.html`` under ``workdir`` linking ``files`` (paths under workdir)."""
    rel = [os.path.relpath(f, workdir) for f in files]
    md = [f"# {title}", "", *summary, "", "## Tables and exports", ""]
    md += [f"- [{r}]({r})" for r in rel if not r.endswith(".png")]
    md += ["", "## Plots", ""] + [f"![{r}]({r})" for r in rel if r.endswith(".png")]
    body = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(s)}</p>" for s in summary]
    body += ["<h2>Tables and exports</h2><ul>"]
    body += [f'<li><a href="{html.escape(r)}">{html.escape(r)}</a></li>' for r in rel if not r.endswith(".png")]
    body += ["</ul><h2>Plots</h2>"]
    body += [f'<figure><img src="{html.escape(r)}" width="640"><figcaption>{html.escape(r)}</figcaption></figure>'
             for r in rel if r.endswith(".png")]
    paths = [os.path.join(workdir, "report.md"), os.path.join(workdir, "report.html")]
    with atomic_path(paths[0]) as tmp, open(tmp, "w") as f:
        f.write("\n".join(md) + "\n")
    with atomic_path(paths[1]) as tmp, open(tmp, "w") as f:
        f.write("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title></head><body>"
                + "\n".join(body) + "</body></html>\n")
    return paths
