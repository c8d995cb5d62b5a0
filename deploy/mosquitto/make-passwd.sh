#!/bin/sh
# Create a Mosquitto password file for gpu-twin with a random password per account.
#
#   make-passwd.sh PASSWD_FILE [NODE ...]
#
# Accounts: twin (the twin service), jobs (job step reporters) and one per NODE (the node name is the
# username; acl.example relies on it). Writes PASSWD_FILE with hashed passwords (mode 600) and prints
# "username password" lines on stdout, once: hand each client its own line. Passwords never appear on
# a command line (they are hashed in place with `mosquitto_passwd -U`). Refuses to overwrite a file.
# MOSQUITTO_PASSWD overrides the path of the mosquitto_passwd tool.
set -eu

if [ "$#" -lt 1 ]; then
    echo "usage: $0 PASSWD_FILE [NODE ...]" >&2
    exit 2
fi
out=$1
shift
if [ -e "$out" ]; then
    echo "$0: $out exists; remove it first, or add a user with: mosquitto_passwd $out USER" >&2
    exit 1
fi
MOSQUITTO_PASSWD=${MOSQUITTO_PASSWD:-mosquitto_passwd}

umask 077
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT INT TERM
: > "$tmp"
credentials=""
for user in twin jobs "$@"; do
    case "$user" in
        "" | *[!A-Za-z0-9_.-]*)
            echo "$0: username '$user' must be letters, digits, '_', '-' or '.' (a topic segment)" >&2
            exit 1 ;;
    esac
    if cut -d: -f1 "$tmp" | grep -qxF -- "$user"; then
        echo "$0: username '$user' is given twice" >&2
        exit 1
    fi
    # 24 random bytes as 48 hex digits: no character needs quoting in a URL or a shell.
    password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s:%s\n' "$user" "$password" >> "$tmp"
    credentials="$credentials$user $password
"
done
"$MOSQUITTO_PASSWD" -U "$tmp"
mv "$tmp" "$out"
trap - EXIT INT TERM
printf '%s' "$credentials"
