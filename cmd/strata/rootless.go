package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	strfs "github.com/strata-fs/strata/fs"
	"github.com/strata-fs/strata/layerstore"
)

// What an unprivileged daemon (a plain user, or root in a user namespace as
// rootless podman runs its mount program) does differently:
//   - overlay xattrs in user.overlay.* (trusted.* needs CAP_SYS_ADMIN in the
//     initial user namespace);
//   - no FUSE passthrough (same capability);
//   - a store's layers carry owners and modes in user.containers.override_stat
//     (layerstore/rootless.go), which its mounts present.

// unprivilegedConfig sets what cfg needs when the daemon lacks privileges.
// withOverride: present (and record) owners through the override xattr.
func unprivilegedConfig(cfg *strfs.Config, withOverride bool) {
	if layerstore.Privileged() {
		return
	}
	cfg.Rootless = true
	cfg.NoPassthrough = true
	cfg.OverrideStat = cfg.OverrideStat || withOverride
}

// idFlags are the ID mapping flags of strata mount.
type idFlags struct {
	uidmap, gidmap       []string
	squashRoot           bool
	squashUID, squashGID int64
}

func (f *idFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.uidmap, "uidmap", nil, "present layer uid CONTAINER as HOST for SIZE ids: CONTAINER:HOST:SIZE (repeatable; fuse-overlayfs uidmapping=)")
	fs.StringArrayVar(&f.gidmap, "gidmap", nil, "the same for gids (fuse-overlayfs gidmapping=)")
	fs.BoolVar(&f.squashRoot, "squash-to-root", false, "present every owner as 0:0")
	fs.Int64Var(&f.squashUID, "squash-to-uid", -1, "present every file as owned by this uid")
	fs.Int64Var(&f.squashGID, "squash-to-gid", -1, "present every file as owned by this gid")
}

func (f *idFlags) mapping() (strfs.IDMapping, error) {
	var m strfs.IDMapping
	var err error
	if len(f.uidmap) > 0 {
		if m.UID, err = strfs.ParseIDMap(strings.Join(f.uidmap, ":")); err != nil {
			return m, usageError{"--uidmap: " + err.Error()}
		}
	}
	if len(f.gidmap) > 0 {
		if m.GID, err = strfs.ParseIDMap(strings.Join(f.gidmap, ":")); err != nil {
			return m, usageError{"--gidmap: " + err.Error()}
		}
	}
	m.SquashToRoot = f.squashRoot
	if f.squashUID >= 0 {
		if m.SquashUID, err = idValue(strconv.FormatInt(f.squashUID, 10)); err != nil {
			return m, usageError{"--squash-to-uid: " + err.Error()}
		}
	}
	if f.squashGID >= 0 {
		if m.SquashGID, err = idValue(strconv.FormatInt(f.squashGID, 10)); err != nil {
			return m, usageError{"--squash-to-gid: " + err.Error()}
		}
	}
	return m, nil
}

// idOption applies one fuse-overlayfs ID option to m; ok is false for other
// options.
func idOption(m *strfs.IDMapping, key, val string) (ok bool, err error) {
	switch key {
	case "uidmapping":
		m.UID, err = strfs.ParseIDMap(val)
	case "gidmapping":
		m.GID, err = strfs.ParseIDMap(val)
	case "squash_to_root":
		m.SquashToRoot = true
	case "squash_to_uid":
		m.SquashUID, err = idValue(val)
	case "squash_to_gid":
		m.SquashGID, err = idValue(val)
	default:
		return false, nil
	}
	if err != nil {
		err = fmt.Errorf("%s: %w", key, err)
	}
	return true, err
}

func idValue(s string) (*uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%q is not an id", s)
	}
	v := uint32(n)
	return &v, nil
}
