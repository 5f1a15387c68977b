#!/usr/bin/env python3
"""Renders the Helm chart offline, as `helm lint --strict` and `helm template`
would, with Helm's own Go SDK (the helm-python-sdk wheel that setup.sh
installs), for machines without a helm binary (Debian has none).

    scripts/helm-template.py deploy/helm/kmesh-rs [-f values.yaml]... \
        [--set-json '{"meshSource": "istio"}'] [-n kmesh-system] [--name kmesh-rs]

Prints the manifests as one YAML stream, in template order. Exits 1 naming
the template or value at fault when lint finds an error or a warning, or
rendering fails.
"""
import argparse
import json
import sys

try:
    from helm_python import chart as helm_chart
    from helm_python.errors import HelmError
except ImportError:
    sys.exit("helm-template.py: the helm-python-sdk package is missing; run scripts/setup.sh")

LINT_WARNING = 2


def merge(base: dict, override: dict) -> dict:
    """Deep merge, later values winning, as helm merges -f files and --set."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--set-json", action="append", default=[])
    parser.add_argument("-n", "--namespace", default="kmesh-system")
    parser.add_argument("--name", default="kmesh-rs")
    parser.add_argument("--kube-version", default="v1.32.0")
    args = parser.parse_args()

    values: dict = {}
    try:
        for path in args.values:
            with open(path, encoding="utf-8") as f:
                values = merge(values, helm_chart.values_from_yaml(f.read()))
        for text in args.set_json:
            values = merge(values, json.loads(text))
    except OSError as e:
        print(f"helm-template.py: values file {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    except json.JSONDecodeError as e:
        print(f"helm-template.py: --set-json {text!r} is not JSON: {e}", file=sys.stderr)
        return 1
    except HelmError as e:
        print(f"helm-template.py: values file {path}: {e}", file=sys.stderr)
        return 1

    try:
        report = helm_chart.lint(
            args.chart,
            values,
            strict=True,
            namespace=args.namespace,
            kube_version=args.kube_version,
        )
        problems = [m for m in report["messages"] if m["severity"] >= LINT_WARNING]
        # The SDK repeats each finding under "errors"; print those only when
        # no message carries them.
        for m in problems:
            print(f"helm lint: {m['path']}: {m['error']}", file=sys.stderr)
        if not problems:
            for e in report["errors"]:
                print(f"helm lint: {e}", file=sys.stderr)
        if problems or report["errors"]:
            return 1
        loaded = helm_chart.Chart.load(args.chart)
        rendered = loaded.render(
            values, name=args.name, namespace=args.namespace, is_install=True
        )
    except HelmError as e:
        print(f"helm-template.py: {args.chart}: {e}", file=sys.stderr)
        return 1
    for path in sorted(rendered):
        text = rendered[path].strip()
        if path.endswith(".txt") or not text:
            continue
        print(f"---\n# Source: {path}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
