// custos_audit/verify.h — the auditor's checks, trusting nothing but a public key.
//
// Every function here runs in memory bounded independently of its input
// (FORMAT.md §4): inputs are streamed, nothing is reserved from a count the
// input states, and the JSON forms are refused past fixed nesting and size
// limits before a parser builds anything for them. None throws: every
// problem is a VerifyResult.
#pragma once

#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <string_view>

namespace custos::auditfmt {

struct VerifyResult {
  bool ok = false;
  bool integrity = true;  // when !ok: false if the input is unusable for another reason (exit 1, not 5)
  std::string error;      // the first problem: "entry 17: ..." or "checkpoint 2: ..."
  std::string summary;    // "ok: entries=N checkpoints=C size=S root=<hex>"
  std::uint64_t entries = 0;
  std::uint64_t checkpoints = 0;
  std::uint64_t size = 0;  // the tree size verified (the last checkpoint's)
  std::string root_hex;    // its root
};

struct VerifyOptions {
  // A signed checkpoint the auditor obtained before (a note, FORMAT.md §2.3):
  // the export must hold at least its size and reproduce its root there.
  std::optional<std::string> trusted_checkpoint;
  // An export of no entries verifies only if allowed.
  bool allow_empty = false;
};

// Verifies an export (export.h) against the verifier key `vkey`
// (checkpoint.h): every checkpoint signature; every entry's structure,
// sequence number and link to its predecessor; every checkpoint root
// recomputed from the entries (which makes successive checkpoints
// consistent); the subject openings of entries that commit to their subjects;
// and that a signed checkpoint covers every entry. See FORMAT.md §4.
VerifyResult verify_export(std::istream& in, std::string_view vkey, const VerifyOptions& options = {});

// Verifies that the export `newer` extends `older` (an export, or a file
// holding one signed checkpoint note): `older` verifies, then `newer`
// verifies with older's last checkpoint as its trusted checkpoint.
// `older` must be seekable (it is read twice to tell its form).
VerifyResult verify_consistency_files(std::istream& older, std::istream& newer, std::string_view vkey);

// Verifies an inclusion bundle (FORMAT.md §5): the checkpoint's signature,
// its size against tree_size, the inclusion proof of the entry, and the
// subject's membership if the bundle carries one.
VerifyResult verify_inclusion_bundle(std::string_view bundle_json, std::string_view vkey);

// Verifies a DSR access package as the vault writes it (the whole DSR
// export document, its access_log object, or one bundle), streamed: every
// bundle as verify_inclusion_bundle does, and that every entry concerns one
// and the same subject (the package's). `in` must be seekable (it is read
// twice: limits first, then the proofs).
VerifyResult verify_package(std::istream& in, std::string_view vkey);

}  // namespace custos::auditfmt
