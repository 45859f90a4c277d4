/*
 * main.c — the `engram` command: dispatch to subcommands and the top-level help.
 * Each subcommand lives in its own cmd_*.c and prints its own --help.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "device.h"

typedef struct {
    const char* name;
    int (*run)(int argc, char** argv);   // argv[0] is the subcommand name
    const char* summary;
} Command;

static const Command COMMANDS[] = {
    {"train", cmd_train, "train (or resume) a model: engram train CONFIG [key=value ...]"},
    {"eval", cmd_eval, "validation loss of a checkpoint: engram eval CHECKPOINT [--data GLOB]"},
    {"sweep", cmd_sweep, "rho-allocation sweeps: engram sweep plan|run|report ..."},
    {"inspect", cmd_inspect, "show a checkpoint: engram inspect CHECKPOINT [--tensor NAME [--slice A:B]] [--ngram TEXT [--world-size P]] [--json]"},
    {"tokenize", cmd_tokenize, "tokenize text into shards: engram tokenize --tokenizer FILE --out DIR TEXT..."},
    {"hash", cmd_hash, "rows an n-gram maps to: engram hash CONFIG (--text STR | --ids=LIST) [--json] [--world-size P]"},
    {"config", cmd_config, "print the resolved config, or every key: engram config CONFIG [key=value ...] | --keys"},
    {"bench", cmd_bench, "benchmarks, JSON out: engram bench hash|tokenize|train|exchange|experts|checkpoint"},
};
#define N_COMMANDS ((int)(sizeof(COMMANDS) / sizeof(COMMANDS[0])))

static void usage_(FILE* f) {
    fprintf(f, "engram %s — MoE + Engram language-model training\n\nusage: engram COMMAND [args]\n\n",
            ENGRAM_VERSION);
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-9s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\n'engram COMMAND --help' shows a command's options.\n");
}

int main(int argc, char** argv) {
    if (argc < 2) {
        usage_(stderr);
        return ENGRAM_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage_(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("engram %s (backends: cpu%s)\n", ENGRAM_VERSION, device_has_cuda() ? " cuda" : "");
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    engram_fail("unknown command '%s'; run 'engram --help' for the list", argv[1]);
}
