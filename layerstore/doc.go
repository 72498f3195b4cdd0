// Package layerstore is strata's on-disk image store: import of docker-archive,
// OCI layout (directory or tar) and legacy v1 images, content-addressed
// extracted layers in the kernel overlayfs format, images, tags, mount
// records and garbage collection. It knows nothing about FUSE: the fs
// package gets an ordered list of directories from LowerDirs.
//
// # On-disk layout (under the store root)
//
//	lock                          flock'ed by writers (commit of an import, tag, rmi, gc)
//	repositories.json             tags, docker's format: {"Repositories":{"docker.io/library/busybox":
//	                              {"docker.io/library/busybox:latest":"sha256:<image id>",
//	                               "docker.io/library/busybox@sha256:<manifest>":"sha256:<image id>"}}}
//	layers/sha256/<diffID hex>/
//	    diff/                     the extracted tree (overlayfs format, see below)
//	    layer.json                {diff_id, size (uncompressed tar bytes), entries, blob_digests
//	                              (every compressed digest verified for this content), compressions,
//	                              opaque_xattr, imported}
//	    contents.jsonl            content manifest for fsck: one JSON object per tar entry in tar
//	                              order (path, type, mode, uid, gid, size, sha256, link, rdev,
//	                              mtime, xattrs); a later line for a path replaces an earlier one
//	    distribution.json         compressed blobs known to carry the layer and the registry
//	                              repositories holding them (pull, push: distribution.go)
//	    tar-split.json.gz         the layer tar's raw headers and each file's CRC-64 (tar-split
//	                              format), from which export reassembles the tar byte for byte
//	images/<image id hex>/
//	    config.json               the image config, byte for byte (its sha256 is the image ID)
//	    image.json                {id, layers [{diff_id, digest}], source, manifest_digests, imported}
//	mounts/<hash>.json            one MountRecord per mountpoint (written by the mount side)
//	containers/<name>/{upper,work} writable layers
//	tmp/                          staging, same filesystem as everything else
//	    import-<rand>/ + import-<rand>.lock   one per running import (the .lock is flock'ed)
//
// Layers are keyed by diffID (the sha256 of the uncompressed tar), so a layer
// is stored once whatever the compression of the blob that carried it, and an
// import finds already-stored layers before reading any blob.
//
// # Input
//
// Import detects the format itself: an OCI layout (index.json/oci-layout,
// nested indexes followed, every image imported, names from
// io.containerd.image.name or org.opencontainers.image.ref.name), a docker
// save archive (manifest.json; the legacy json/VERSION/repositories files and
// layer paths that are symlinks inside the tar are fine), or a legacy v1
// archive (repositories + <id>/json parent chains + <id>/layer.tar; its config
// is synthesised deterministically like docker's v1 migration). Each may be
// a directory or a tar; a tar is indexed once and its blobs are read in place
// (io.SectionReader), several at once. A tar that is gzip/zstd-compressed or
// not seekable (stdin "-", a pipe) is first spooled, decompressed, into an
// unlinked O_TMPFILE in the staging directory. Layer compression is decided
// from the blob's first bytes (gzip, zstd or plain), never from the media type.
//
// Each layer blob is read once: the compressed bytes are hashed (blob
// digest), decompressed, hashed again (diffID) and extracted in the same pass,
// up to ImportOptions.Parallel layers at a time. A layer already in the store
// is not read at all, unless the image names it by a blob digest the store
// has not verified yet, in which case the blob is hashed without extracting.
//
// # Atomicity and concurrency
//
// An import extracts into its own staging directory under tmp/ without
// holding the store lock, so imports run concurrently. When every layer is
// extracted and verified, it calls syncfs once, takes the lock, renames each
// layer directory into layers/, writes images/<id>/ (built in staging, then
// renamed), and finally replaces repositories.json (temp file, fsync,
// rename, fsync of the directory). A reader follows repositories.json to
// images/<id> to layers/<diffID>, and each of those appears only when
// complete, so readers need no lock and never see a half-imported image.
// A process that dies leaves only its staging directory; the lock file beside
// it is no longer flock'ed, and the next Open or GC removes it.
//
// # Layer format
//
// Whiteouts (".wh.NAME") become character devices 0/0 named NAME; opaque
// markers (".wh..wh..opq") become the xattr trusted.overlay.opaque="y" on
// the directory (user.overlay.opaque when not running as root, as
// fuse-overlayfs and unprivileged overlayfs read it). The store's layer
// directories can thus be handed to mount -t overlay or fuse-overlayfs as
// they are. Owners, modes (setuid/setgid/sticky), nanosecond atime/mtime,
// xattrs (SCHILY.xattr.*, including security.capability), hard links,
// symlinks, fifos and device nodes are kept. Xattrs in the overlay
// namespaces (trusted.overlay.*, user.overlay.*) are dropped from layer
// tars: a layer must not fake opaque dirs, redirects or metacopy.
// Without root, owners are not applied (they stay in contents.jsonl), device
// nodes and trusted.*/security.* xattrs are skipped with a warning, and the
// opaque xattr is user.overlay.opaque.
//
// # Why our own extractor and not github.com/moby/go-archive
//
// go-archive's Unpack works on path strings (filepath.Join(dest, name),
// then os.* calls that resolve every component and follow symlinks) and
// defends against breakout by checking the joined string. The codebase rule
// is stronger: every syscall that touches a layer directory resolves beneath
// the layer root without following any symlink the layer contains. The
// extractor (extract.go) therefore works on archive/tar and directory file
// descriptors: parents are opened with openat2(RESOLVE_BENEATH|
// RESOLVE_NO_SYMLINKS), entries are created with mkdirat, openat(O_EXCL|
// O_NOFOLLOW), mknodat, symlinkat and linkat relative to those fds, and
// metadata is set through the new file's own fd (fchown, fchmod, fsetxattr,
// futimens) or with AT_SYMLINK_NOFOLLOW. A symlinked parent component
// ("a -> /etc" then "a/passwd") is refused, not followed. It also lets the
// tar stream be hashed (diffID) and extracted in one pass.
//
// # Hostile input
//
// Names are cleaned; a leading "/" is dropped (as tar and docker do); ".."
// that climbs out, NUL, names over PATH_MAX and components over NAME_MAX are
// refused with ErrUnsafePath, as are symlinked parents, hard links to targets
// that are outside the layer, not yet extracted or directories. Duplicate
// entries: the later one wins, a directory over a directory merges. Truncated
// streams fail with ErrTruncated, a compressed blob that expands more than
// MaxRatio:1 (after RatioFloor bytes) with ErrDecompressionBomb, and any
// digest that differs from the image's declaration with ErrDigestMismatch.
// In every case the store is left as it was.
package layerstore
