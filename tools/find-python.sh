#!/bin/sh
# Prints the path of a Python 3.13 interpreter, or explains what to install and exits 1.
#
# Why a script: `python3.13` on PATH may be a pyenv shim that exits 127 when 3.13 is not the
# selected version, so each candidate is run, not just looked up. The app deploys on Python 3.13
# (azure-functions-runtime, runtime version control), and make run / make test use the same.
want="3.13"
for candidate in "${HITL_PYTHON:-}" python3.13 \
        "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 \
        /usr/local/bin/python3.13 /usr/bin/python3.13 python3; do
    [ -n "$candidate" ] || continue
    version=$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    if [ "$version" = "$want" ]; then
        command -v "$candidate" 2>/dev/null || echo "$candidate"
        exit 0
    fi
done
cat >&2 <<MSG
hitl needs Python $want (the version the app deploys on: Azure Functions, Flex Consumption).
None was found: tried \$HITL_PYTHON, python3.13, pyenv's versions/3.13*, /usr/local/bin, /usr/bin.
Install it, then run the command again, for example:
  pyenv install 3.13          # with pyenv
  apt-get install python3.13  # Debian 13 / Ubuntu 24.10 and later
or point HITL_PYTHON at a Python 3.13 interpreter.
MSG
exit 1
