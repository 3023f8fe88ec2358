# bash completion for coordctl; generated from its parser by man/generate.py: do not edit.
# Install as /usr/share/bash-completion/completions/coordctl, or source it from ~/.bashrc.

_coordctl_value_kind() {
    case "$1" in
        --allow-weak-checksums) values="true false" ;;
        --ca-file) values="@files" ;;
        --description) values="@none" ;;
        --display-name) values="@none" ;;
        --feed) values="@none" ;;
        --from) values="@repos" ;;
        --limit) values="@none" ;;
        --name) values="@none" ;;
        --note) values="@none" ;;
        --notes) values="@none" ;;
        --only-newest) values="true false" ;;
        --parallel-downloads) values="@none" ;;
        --proxy) values="@none" ;;
        --repo-id) values="@repos" ;;
        --resource) values="@none" ;;
        --socket) values="@files" ;;
        --state) values="waiting running finished error canceled all" ;;
        --task-id) values="@none" ;;
        --tls-verify) values="true false" ;;
        --to) values="@repos" ;;
        --verify-checksum) values="true false" ;;
        *) values="" ;;
    esac
}

_coordctl() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local path="" i w values words
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        if [[ "$w" == "--" ]]; then
            return 0  # the command of 'coordctl run': leave it to bash
        elif [[ "$w" == -* ]]; then
            _coordctl_value_kind "$w"
            [[ -n "$values" && "$w" != *=* ]] && ((i++))
        elif _coordctl_is_command "${path:+$path }$w"; then
            path="${path:+$path }$w"
        fi
    done
    if ((COMP_CWORD > 1)); then
        _coordctl_value_kind "${COMP_WORDS[COMP_CWORD - 1]}"
        case "$values" in
            "") ;;
            @files) COMPREPLY=($(compgen -f -- "$cur")); return 0 ;;
            @repos)
                COMPREPLY=($(compgen -W "$(coordctl repo list 2>/dev/null |
                    sed -n 's/^Id: *//p')" -- "$cur"))
                return 0 ;;
            @none) return 0 ;;
            *) COMPREPLY=($(compgen -W "$values" -- "$cur")); return 0 ;;
        esac
    fi
    local subs="" opts=""
    case "$path" in
        "") subs="repo tasks server run shell"; opts="--help --socket --json --version" ;;
        "repo") subs="create update delete sync publish copy list show tasks"; opts="--help" ;;
        "repo create") subs=""; opts="--help --json --wait --repo-id --display-name --description --note --notes --feed --only-newest --verify-checksum --parallel-downloads --tls-verify --ca-file --proxy --allow-weak-checksums" ;;
        "repo update") subs=""; opts="--help --json --wait --repo-id --display-name --description --note --notes --feed --only-newest --verify-checksum --parallel-downloads --tls-verify --ca-file --proxy --allow-weak-checksums" ;;
        "repo delete") subs=""; opts="--help --json --wait --repo-id" ;;
        "repo sync") subs=""; opts="--help --json --wait --repo-id" ;;
        "repo publish") subs=""; opts="--help --json --wait --repo-id" ;;
        "repo copy") subs=""; opts="--help --json --wait --from --to --name" ;;
        "repo list") subs=""; opts="--help --json" ;;
        "repo show") subs=""; opts="--help --json --repo-id" ;;
        "repo tasks") subs="list details cancel"; opts="--help" ;;
        "repo tasks list") subs=""; opts="--help --json --repo-id --state --all --limit" ;;
        "repo tasks details") subs=""; opts="--help --json --task-id --wait" ;;
        "repo tasks cancel") subs=""; opts="--help --json --task-id --wait" ;;
        "tasks") subs="list details cancel"; opts="--help" ;;
        "tasks list") subs=""; opts="--help --json --resource --state --all --limit" ;;
        "tasks details") subs=""; opts="--help --json --task-id --wait" ;;
        "tasks cancel") subs=""; opts="--help --json --task-id --wait" ;;
        "server") subs="status"; opts="--help" ;;
        "server status") subs=""; opts="--help --json" ;;
        "run") subs=""; opts="--help --json --resource --wait --no-wait" ;;
        "shell") subs=""; opts="--help --json" ;;
    esac
    if [[ "$cur" == -* || -z "$subs" ]]; then
        words="$opts"
    else
        words="$subs"
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}

_coordctl_is_command() {
    case "$1" in
        "repo"|"repo create"|"repo update"|"repo delete"|"repo sync"|"repo publish"|"repo copy"|"repo list"|"repo show"|"repo tasks"|"repo tasks list"|"repo tasks details"|"repo tasks cancel"|"tasks"|"tasks list"|"tasks details"|"tasks cancel"|"server"|"server status"|"run"|"shell") return 0 ;;
    esac
    return 1
}

complete -F _coordctl coordctl
