package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
)

// command is one subcommand. Each lives in its own file and registers itself
// from an init function, so that adding a command touches no shared table.
type command struct {
	name    string
	usage   string // e.g. "import FILE|DIR [--tag NAME:TAG]"
	summary string
	// flags adds the command's own flags; may be nil.
	flags func(fs *pflag.FlagSet)
	run   func(g *globals, args []string) error
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("duplicate command " + c.name)
	}
	commands[c.name] = c
}

// globals are the flags every command accepts.
type globals struct {
	root      string
	logLevel  string
	logFormat string
	log       *logrus.Logger
}

// usageError is printed with the command's usage line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func defaultRoot() string {
	if r := os.Getenv("STRATA_ROOT"); r != "" {
		return r
	}
	if os.Geteuid() == 0 {
		return "/var/lib/strata"
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "strata")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), fmt.Sprintf("strata-%d", os.Geteuid()))
	}
	return filepath.Join(home, ".local", "share", "strata")
}

func addGlobalFlags(fs *pflag.FlagSet, g *globals) {
	fs.StringVar(&g.root, "root", defaultRoot(), "store directory (env STRATA_ROOT)")
	fs.StringVar(&g.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
}

func (g *globals) setupLogging() error {
	g.log = logrus.New()
	g.log.SetOutput(os.Stderr)
	lvl, err := logrus.ParseLevel(g.logLevel)
	if err != nil {
		return usageError{fmt.Sprintf("--log-level: %v", err)}
	}
	g.log.SetLevel(lvl)
	switch g.logFormat {
	case "text":
		g.log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	case "json":
		g.log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return usageError{fmt.Sprintf("--log-format: %q is not text or json", g.logFormat)}
	}
	return nil
}

func printUsage() {
	fmt.Fprintln(os.Stderr, "usage: strata [--root DIR] [--log-level L] [--log-format text|json] COMMAND [ARGS]")
	fmt.Fprintln(os.Stderr, "       strata -o lowerdir=A:B,upperdir=U,workdir=W DIR   (fuse-overlayfs compatible)")
	fmt.Fprintln(os.Stderr, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-50s %s\n", commands[n].usage, commands[n].summary)
	}
}

// run parses the arguments and runs one command; it returns the exit code.
func run(args []string) int {
	if isOverlayInvocation(args) {
		return runOverlayCompat(args)
	}
	// The command name is the first non-flag argument; global flags may
	// stand before or after it.
	var g globals
	name := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-") {
			if (a == "--root" || a == "--log-level" || a == "--log-format") && i+1 < len(args) {
				i++
			}
			continue
		}
		name = a
		args = append(append([]string{}, args[:i]...), args[i+1:]...)
		break
	}
	if name == "" || name == "help" {
		for _, a := range args {
			if a == "--version" {
				fmt.Println("strata", version)
				return 0
			}
		}
		printUsage()
		if name == "help" {
			return 0
		}
		return 2
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "strata: unknown command %q (see strata help)\n", name)
		return 2
	}
	fs := pflag.NewFlagSet("strata "+name, pflag.ContinueOnError)
	fs.SortFlags = false
	addGlobalFlags(fs, &g)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: strata %s\n%s", cmd.usage, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "strata %s: %v\n", name, err)
		return 2
	}
	if err := g.setupLogging(); err != nil {
		fmt.Fprintf(os.Stderr, "strata: %v\n", err)
		return 2
	}
	if err := cmd.run(&g, fs.Args()); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "strata %s: %v\nusage: strata %s\n", name, err, cmd.usage)
			return 2
		}
		fmt.Fprintf(os.Stderr, "strata %s: %v\n", name, err)
		return 1
	}
	return 0
}

const version = "0.1.0"
