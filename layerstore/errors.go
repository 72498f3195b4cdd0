package layerstore

import "errors"

// Sentinel errors. Every error the package returns for one of these
// conditions wraps the sentinel, so callers test with errors.Is.
var (
	// ErrNotFound: no image, tag or layer matches the reference.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: an image-ID prefix matches more than one image.
	ErrAmbiguous = errors.New("ambiguous reference")
	// ErrInvalidReference: a reference or tag that breaks the naming rules.
	ErrInvalidReference = errors.New("invalid reference")
	// ErrUnknownFormat: the input is none of docker-archive, OCI layout, legacy v1.
	ErrUnknownFormat = errors.New("unknown image format")
	// ErrInvalidImage: the archive is well-formed but its image metadata is not
	// (missing blob, bad JSON, layer count differs from the config's diff_ids).
	ErrInvalidImage = errors.New("invalid image")
	// ErrDigestMismatch: a blob or a layer's uncompressed content does not
	// hash to the digest the image declares.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnsafePath: a tar entry that would resolve outside the layer
	// (.., a symlinked parent, a hard link to outside or to nothing, NUL, too long).
	ErrUnsafePath = errors.New("unsafe path in layer")
	// ErrTruncated: a blob or tar stream that ends early.
	ErrTruncated = errors.New("truncated stream")
	// ErrDecompressionBomb: a compressed blob that expands beyond the ratio cap.
	ErrDecompressionBomb = errors.New("decompression ratio exceeds limit")
	// ErrInUse: the image is used by a mount.
	ErrInUse = errors.New("image in use")
)
