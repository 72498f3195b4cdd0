package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/layerstore"
)

var loginFlags struct {
	user          string
	password      string
	passwordStdin bool
	insecure      bool
}

func init() {
	register(&command{
		name:    "login",
		usage:   "login REGISTRY -u USER --password-stdin",
		summary: "check credentials with a registry and store them in the docker config (~/.docker/config.json)",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVarP(&loginFlags.user, "username", "u", "", "user name")
			fs.StringVarP(&loginFlags.password, "password", "p", "", "password (visible in the process list: prefer --password-stdin)")
			fs.BoolVar(&loginFlags.passwordStdin, "password-stdin", false, "read the password from stdin (one line)")
			addInsecureFlag(fs, &loginFlags.insecure)
		},
		run: runLogin,
	})
	register(&command{
		name:    "logout",
		usage:   "logout REGISTRY",
		summary: "remove a registry's credentials from the docker config",
		run:     runLogout,
	})
}

func runLogin(g *globals, args []string) error {
	if len(args) != 1 {
		return usageError{"need exactly one REGISTRY"}
	}
	if loginFlags.user == "" {
		return usageError{"need --username (-u)"}
	}
	pw := loginFlags.password
	switch {
	case loginFlags.passwordStdin && pw != "":
		return usageError{"--password and --password-stdin exclude each other"}
	case loginFlags.passwordStdin:
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading the password from stdin: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
		if pw == "" {
			return usageError{"--password-stdin: stdin held no password"}
		}
	case pw != "":
		g.log.Warn("a password given with --password shows in the process list; use --password-stdin")
	default:
		return usageError{"need --password-stdin (or --password)"}
	}
	ro, err := registryOptions(loginFlags.insecure)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	file, err := layerstore.Login(ctx, args[0], loginFlags.user, pw, ro)
	if err != nil {
		return err
	}
	fmt.Printf("Login Succeeded (credentials stored in %s)\n", file)
	return nil
}

func runLogout(g *globals, args []string) error {
	if len(args) != 1 {
		return usageError{"need exactly one REGISTRY"}
	}
	ro, err := registryOptions(false)
	if err != nil {
		return err
	}
	file, err := layerstore.Logout(args[0], ro)
	if err != nil {
		return err
	}
	if file == "" {
		fmt.Printf("Not logged in to %s\n", args[0])
		return nil
	}
	fmt.Printf("Removed login credentials for %s from %s\n", args[0], file)
	return nil
}
