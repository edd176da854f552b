# Sourced by the setup scripts: pip's own output goes to a log file, shown only when pip fails,
# so a setup prints a few lines of its own (pip's warnings, e.g. about a machine's index settings, stay in the log).
WEBDANCER_PIP_LOG=${WEBDANCER_PIP_LOG:-$(mktemp -t webdancer-pip.XXXXXX)}
pip_install() {  # pip_install PYTHON ARGS...: `PYTHON -m pip install ARGS`, quietly
  local py=$1
  shift
  if ! "$py" -m pip install "$@" >>"$WEBDANCER_PIP_LOG" 2>&1; then
    echo "error: pip install $* failed; the end of its log ($WEBDANCER_PIP_LOG):" >&2
    tail -n 40 "$WEBDANCER_PIP_LOG" >&2
    return 1
  fi
}
venv_is_current() {  # venv_is_current VENV WANT: VENV was set up to WANT (what its setup script wrote in its stamp)
  [ -f "$1/.webdancer-installed" ] && [ "$(cat "$1/.webdancer-installed")" = "$2" ]
}
make_venv() {  # make_venv VENV PYTHON: the environment (made if missing) with a current pip
  [ -x "$1/bin/python" ] || "$2" -m venv "$1"
  pip_install "$1/bin/python" --upgrade pip
}
