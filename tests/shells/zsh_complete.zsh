# What zsh's completion system offers for a command line: `zsh -f zsh_complete.zsh DIR 'LINE'` prints
# one candidate per line. tests/test_manpages.py runs it on the generated _taskstats-fast in DIR.
# zsh completes only inside its line editor, so an interactive zsh runs in a pseudo-terminal
# (zsh/zpty), is sent LINE and a TAB, and compadd, through which every completion function adds its
# candidates, is wrapped to print them; TAB is bound to a widget that completes, then prints a
# marker, so the end is known even when nothing was offered. Each step waits for a marker the shell prints (not the
# terminal's echo of what was sent): typed-ahead input would be lost while compinit runs.
zmodload zsh/zpty || exit 3
zpty shell zsh -f -i
typeset -g seen=""
wait_for() {
  local line
  while true; do
    zpty -r -t shell line 2>/dev/null || { sleep 0.02; continue; }
    seen+="$line"
    [[ $seen == *"$1"* ]] && return 0
  done
}
zpty -w shell "fpath=($1 \$fpath); autoload -U compinit; compinit -u -D; print tsf''ready1"
wait_for tsfready1
zpty -w shell 'compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  typeset -a __hits; builtin compadd -A __hits "$@"; (( $#__hits == 0 )) && return 1
  for h in $__hits; do print -r -- "<tsf-hit>$h"; done
}
tsf-complete() { zle complete-word; print -r -- "<tsf-""completed>" }
zle -N tsf-complete; bindkey "^I" tsf-complete; print tsf""ready2'
wait_for tsfready2
seen=""
zpty -w -n shell "$2"$'\t'
wait_for '<tsf-completed>'
print -r -- "$seen" | tr -d '\r' | grep -ao '<tsf-hit>[^<[:cntrl:]]*' | sed 's/<tsf-hit>//' | sort -u
zpty -d shell
