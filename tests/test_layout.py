import subprocess
import sys


def test_library_imports_without_prefect():
    code = (
        "import pkgutil, importlib, sys, product_studio\n"
        "for m in pkgutil.iter_modules(product_studio.__path__):\n"
        "    importlib.import_module('product_studio.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'prefect' or n.startswith('prefect.'))\n"
        "assert not bad, bad\n"
        "assert 'torch' not in sys.modules, 'importing the library must not import torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
