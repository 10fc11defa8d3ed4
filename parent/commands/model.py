"""`hermetic model predict|export-onnx`: use a model directory `hermetic checkpoint decrypt --model-dir` wrote;
`hermetic model params`: the tensors a job's model has, which its initial weights must hold."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "model",
        help="predict with (or export) a decrypted model directory; list a job model's parameters",
        description=(
            "A model directory holds model.safetensors (the weights) and model.json (the model "
            "format, the input layout and the sealed dataset's public schema). `predict` "
            "re-encodes an input file by that schema, as public evaluation data is, and writes "
            "one prediction per row; with the label column present it also reports the "
            "metrics the trainer releases. `params` lists the tensors (state_dict names and shapes) "
            "of the model a job spec builds on a sealed dataset: the tensors a weights file for "
            "model.weights_sha256 must hold, exactly."
        ),
    )
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="model_command", metavar="ACTION")
    sub.required = True

    pred = sub.add_parser("predict", help="predict every row of a CSV, Parquet or NPZ file")
    pred.add_argument("model_dir", metavar="DIR", help="model directory (model.json, model.safetensors)")
    pred.add_argument("input", metavar="INPUT", help="CSV, Parquet or NPZ file; the label column may be absent")
    pred.add_argument("--out", required=True, metavar="FILE", help="predictions CSV to write (mode 0600)")
    pred.add_argument("--json", action="store_true", help="print the result as one JSON object")
    pred.set_defaults(func=run)

    onnx = sub.add_parser("export-onnx", help="export the module as ONNX (needs the onnx package)")
    onnx.add_argument("model_dir", metavar="DIR", help="model directory (model.json, model.safetensors)")
    onnx.add_argument("--out", required=True, metavar="FILE.onnx", help="ONNX file to write (mode 0600)")
    onnx.add_argument("--json", action="store_true", help="print the result as one JSON object")
    onnx.set_defaults(func=run)

    params = sub.add_parser("params", help="list the parameter tensors a job's model has (what initial weights hold)")
    params.add_argument("spec", metavar="JOB.toml", help="the training job spec")
    params.add_argument("--sealed", required=True, metavar="FILE",
                        help="a sealed dataset of the job (path or s3://bucket/key): its public schema sizes the model")
    params.add_argument("--json", action="store_true",
                        help='print {"model_spec_sha256", "parameters", "tensors": [{"name", "shape"}]}')
    params.set_defaults(func=_params)


def _params(args: argparse.Namespace) -> int:
    from parent.model_out import parameter_list

    listed = parameter_list(args.spec, args.sealed)
    if args.json:
        print(json.dumps(listed.to_json(), sort_keys=True))
        return 0
    width = max((len(name) for name in listed.shapes), default=0)
    for name, shape in listed.shapes.items():
        print(f"{name:<{width}}  [{', '.join(str(d) for d in shape)}]")
    print(f"{len(listed.shapes)} tensors, {listed.parameters} parameters (model {listed.model_spec_sha256[:16]}...)")
    return 0


def run(args: argparse.Namespace) -> int:
    # torch and safetensors are imported per action: `hermetic --help` stays fast.
    from parent.model_out import export_onnx, load_model_dir, predict, write_predictions

    model = load_model_dir(args.model_dir)
    if args.model_command == "export-onnx":
        path = export_onnx(model, Path(args.out))
        if args.json:
            print(json.dumps({"out_path": str(path), "job_id": model.card.job_id, "step": model.card.step,
                              "input_shape": ["batch", *model.job.input.shape]}, sort_keys=True))
            return 0
        print(f"exported model of job {model.card.job_id} step {model.card.step} -> {path}")
        print(f"  input   input [batch, {', '.join(str(d) for d in model.job.input.shape)}]")
        print("  output  output [batch, outputs]")
        return 0
    prediction = predict(model, args.input)
    out = write_predictions(model, prediction, Path(args.out))
    task = "regression" if prediction.regression else "classification"
    metrics = dict(prediction.metrics)
    if args.json:
        print(json.dumps({"out_path": str(out), "rows": prediction.rows, "task": task,
                          "job_id": model.card.job_id, "step": model.card.step, "metrics": metrics},
                         sort_keys=True))
        return 0
    print(f"predicted {prediction.rows} rows ({task}) -> {out}")
    for name in sorted(metrics):
        print(f"  {name:<10} {metrics[name]:.6g}")
    return 0
