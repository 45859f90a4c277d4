/*
 * cli.h — the subcommands of `engram` (one cmd_*.c each) and the small argument helpers they
 * share. Each cmd_* takes argv with argv[0] = the subcommand's name and returns the exit status.
 */
#ifndef ENGRAM_CLI_H
#define ENGRAM_CLI_H

#include "config.h"

int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_sweep(int argc, char** argv);
int cmd_hash(int argc, char** argv);
int cmd_config(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_inspect(int argc, char** argv);

/* True if argv[i] asks for help. */
int cli_is_help(const char* arg);
/* "--name=value" or "--name value": returns the value and advances *i, or NULL if argv[*i] is not
 * that option. A missing value is a usage error naming the option. */
const char* cli_option(int argc, char** argv, int* i, const char* name);
/* Load CONFIG with key=value overrides, exiting with the config's one-line error on bad input. */
void cli_load_config(Config* c, const char* path, int n_overrides, char** overrides);

#endif
