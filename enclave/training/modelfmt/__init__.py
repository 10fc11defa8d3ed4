"""A closed, declarative model format: a job describes its model as data, never as code.

A model is a `[model]` table of the job spec (format version 1): a chain of layers or
a graph of named nodes, each of a type from a fixed op set (`ops.OPS`). The enclave
parses it strictly (`spec.parse_model`), infers every shape and checks every size
limit before allocating anything (`plan.plan_model`, `limits`), and builds it from
plain torch layers initialised from a Csprng-seeded generator (`build.build_model`).
Nothing a job sends is unpickled, scripted, exported, or looked up by name in torch.

Modules: `errors` (the ModelFormatError family), `limits`, `params` (parameter kinds),
`ops` (the op registry and shape rules), `spec` (dataclasses, parsing, canonical hash),
`plan` (whole-model inference and limits), `layers` (the non-torch modules), `build`,
`presets` (the registered models in this format), `weights` (the strict reader of a
model's public initial weights, a safetensors file the spec names by hash).
"""
