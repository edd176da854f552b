#!/usr/bin/env bash
# Apply third_party_patches/<package>/*.patch to the package installed in a venv (default: verl in
# .venvs/rl). Idempotent: a patch already applied is skipped. `--check` only reports whether each
# patch applies (or is applied), changing nothing; exit 1 when one does neither.
#   bash scripts/apply_patches.sh [--check] [PACKAGE] [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=0
if [ "${1:-}" = "--check" ]; then CHECK=1; shift; fi
PKG=${1:-verl}
PY=${2:-.venvs/rl/bin/python}
DIR=${PATCH_DIR:-third_party_patches/$PKG}
shopt -s nullglob
patches=("$DIR"/*.patch)
if [ ${#patches[@]} -eq 0 ]; then echo "no patches for $PKG"; exit 0; fi
site=$("$PY" -c "import importlib.util, pathlib, sys; s = importlib.util.find_spec(sys.argv[1]); print(pathlib.Path(s.origin).parent.parent)" "$PKG")
status=0
for p in "${patches[@]}"; do
  if patch -d "$site" -p0 -R --dry-run --silent < "$p" >/dev/null 2>&1; then
    echo "applied already: $p"
  elif patch -d "$site" -p0 --dry-run --silent < "$p" >/dev/null 2>&1; then
    if [ "$CHECK" -eq 1 ]; then echo "applies: $p"; else patch -d "$site" -p0 --silent < "$p" && echo "applied: $p"; fi
  else
    echo "DOES NOT APPLY to $PKG in $site: $p" >&2
    status=1
  fi
done
exit $status
