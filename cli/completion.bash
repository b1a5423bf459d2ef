# bash completion for forkvm, forkctl, forkd and forkbench (make install puts
# it in share/bash-completion/completions). The options and commands are
# read from each program's own --help, so they never drift from it.

_forkvm_words() { # PROGRAM [HELP-ARGS...]: the options its help names
	"$@" 2>/dev/null | grep -oE -- '(^|[ ,[])--?[a-zA-Z][a-z-]*' | sed 's/^[ ,[]//' | sort -u
}

_forkvm_complete() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	COMPREPLY=($(compgen -W "$(_forkvm_words "$1" --help)" -- "$cur"))
	[ ${#COMPREPLY[@]} -eq 0 ] && COMPREPLY=($(compgen -f -- "$cur"))
}

_forkctl_complete() {
	local cur=${COMP_WORDS[COMP_CWORD]} words i store=0
	for ((i = 1; i < COMP_CWORD; i++)); do
		[ "${COMP_WORDS[i]}" = store ] && store=1
	done
	if [ $store = 1 ]; then
		words="$(forkctl store help 2>/dev/null | awk '/^  [a-z]/ { sub(/,$/, "", $1); print $1 }') --store --json --help"
	elif [[ $cur == -* ]]; then
		words=$(_forkvm_words forkctl --help)
	else
		words=$({
			forkctl --help 2>/dev/null | awk '/^  [a-z]/ { sub(/,$/, "", $1); print $1 }'
			forkctl --agent=/dev/null help 2>/dev/null | awk '/^  [a-z]/ { sub(/,$/, "", $1); print $1 }'
			echo store
			echo help
		} | sort -u)
	fi
	COMPREPLY=($(compgen -W "$words" -- "$cur"))
}

complete -F _forkvm_complete forkvm forkd forkbench
complete -F _forkctl_complete forkctl
