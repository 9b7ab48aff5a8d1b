"""sparsecc: a compiler for compressed neural networks.

    import sparsecc
    cm = sparsecc.compile(model, example_inputs, target="x86")
    outputs = cm(*inputs); cm.save("model.scc"); cm2 = sparsecc.load("model.scc")
"""
__version__ = "0.1.0"

from sparsecc.errors import (ArtifactError, InputError, ModelLoadError, SparseccError,  # noqa: E402
                             UnsupportedOpError, VerificationError)


def __getattr__(name: str):
    # compile/load pull in torch and TVM: import them on first use, so `import sparsecc` stays cheap.
    if name in ("compile", "load", "CompiledModel"):
        from sparsecc import compiler

        return getattr(compiler, name)
    raise AttributeError(f"module 'sparsecc' has no attribute {name!r}")


__all__ = ["ArtifactError", "CompiledModel", "InputError", "ModelLoadError", "SparseccError", "UnsupportedOpError",
           "VerificationError", "compile", "load"]
