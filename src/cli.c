/*
 * cli.c — argument helpers shared by the subcommands, and `engram config`.
 */
#include "cli.h"

#include <string.h>
#include <sys/stat.h>

#include "common.h"

int cli_is_help(const char* arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

const char* cli_option(int argc, char** argv, int* i, const char* name) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != '\0') return NULL;
    if (*i + 1 >= argc) engram_fail("%s needs a value, e.g. %s=VALUE", name, name);
    return argv[++*i];
}

void cli_load_config(Config* c, const char* path, int n_overrides, char** overrides) {
    char err[1024];
    if (config_load(c, path, n_overrides, overrides, err, sizeof err) != 0) engram_fail("%s", err);
}

static void config_usage_(FILE* f) {
    fprintf(f,
            "usage: engram config CONFIG [key=value ...] [--out FILE]\n"
            "       engram config --keys\n\n"
            "Prints the resolved config (defaults filled in, overrides applied, validated) as YAML;\n"
            "--out FILE writes it there instead (an existing file is never overwritten).\n"
            "--keys prints every key with its type, default and meaning (Markdown).\n");
}

int cmd_config(int argc, char** argv) {
    const char* path = NULL;
    const char* out = NULL;
    char** over = callocCheck(argc, sizeof(char*));
    int n_over = 0;
    for (int i = 1; i < argc; i++) {
        const char* v;
        if (cli_is_help(argv[i])) { config_usage_(stdout); free(over); return 0; }
        if (!strcmp(argv[i], "--keys")) { config_write_keys_markdown(stdout); free(over); return 0; }
        if ((v = cli_option(argc, argv, &i, "--out"))) out = v;
        else if (argv[i][0] == '-') engram_fail("config: unknown option %s; see engram config --help", argv[i]);
        else if (strchr(argv[i], '=')) over[n_over++] = argv[i];
        else if (!path) path = argv[i];
        else engram_fail("config: one CONFIG file only (got %s and %s)", path, argv[i]);
    }
    if (!path) { config_usage_(stderr); free(over); return ENGRAM_EXIT_USAGE; }
    Config c;
    cli_load_config(&c, path, n_over, over);
    if (out) {
        struct stat st;
        if (stat(out, &st) == 0) engram_fail("config: %s exists; choose another --out path or remove it", out);
        FILE* f = fopen(out, "w");
        if (!f) engram_fail("config: cannot write %s", out);
        config_write(&c, f);
        if (fclose(f) != 0) engram_fail("config: error writing %s", out);
    } else {
        config_write(&c, stdout);
    }
    config_free(&c);
    free(over);
    return 0;
}
