// custos-audit — the auditor's independent verifier.
//
// Built from audit/ only (libsodium, OpenSSL): it shares no code with the
// vault it checks. Exit codes: 0 verified, 5 integrity failure, 2 usage,
// 1 other (unreadable files, anything unexpected). Every input is read in
// bounded memory (custos_audit/verify.h), and no exception leaves main.
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "custos_audit/checkpoint.h"
#include "custos_audit/entry.h"
#include "custos_audit/export.h"
#include "custos_audit/subjects.h"
#include "custos_audit/verify.h"

namespace {

constexpr const char* kUsage =
    "usage: custos-audit verify FILE --pubkey KEYFILE [--trusted-checkpoint CP] [--allow-empty]\n"
    "       custos-audit verify-consistency OLD NEW --pubkey KEYFILE\n"
    "       custos-audit verify-inclusion FILE --pubkey KEYFILE   (a bundle, or a DSR access package)\n"
    "       custos-audit verify-package FILE --pubkey KEYFILE     (the same)\n"
    "       custos-audit dump FILE\n"
    "KEYFILE holds the verifier key printed by `custos audit pubkey` (<name>+<id>+<base64>).\n"
    "CP holds a signed checkpoint seen before (the note, or GET /v1/audit/checkpoint's JSON);\n"
    "OLD is an earlier export or such a checkpoint, NEW a later export.\n";

int usage(const std::string& why) {
  std::cerr << "custos-audit: " << why << "\n" << kUsage;
  return 2;
}

// Small text files only (keys, checkpoints): refused past `limit` bytes.
bool read_small(const std::string& path, std::string& out, std::size_t limit = 64 << 10) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out.resize(limit + 1);
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  out.resize(static_cast<std::size_t>(in.gcount()));
  return out.size() <= limit;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

int report(const custos::auditfmt::VerifyResult& r) {
  if (!r.ok) {
    if (!r.integrity) {
      std::cerr << "custos-audit: " << r.error << "\n";
      return 1;
    }
    std::cerr << "integrity failure: " << r.error << "\n";
    return 5;
  }
  std::cout << r.summary << "\n";
  return 0;
}

int cannot_read(const std::string& path) {
  std::cerr << "custos-audit: cannot read " << path << "\n";
  return 1;
}

int dump(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return cannot_read(file);
  namespace af = custos::auditfmt;
  // An entry is printed when the next record arrives, so the openings that
  // may follow it (an `S` record) are shown in its subject_ids.
  std::optional<af::Entry> held;
  std::string held_error;
  const auto print = [&] {
    if (held) std::cout << af::to_json(*held) << "\n";
    if (!held_error.empty()) std::cout << nlohmann::json({{"error", held_error}}).dump() << "\n";
    held.reset();
    held_error.clear();
  };
  af::ExportVisitor v;
  v.on_entry = [&](std::span<const std::uint8_t> bytes) {
    print();
    try {
      held = af::decode(bytes);
    } catch (const std::exception& e) {
      held_error = e.what();
    }
    return true;
  };
  v.on_openings = [&](std::span<const std::uint8_t> bytes) {
    const char* why = nullptr;
    if (held && !af::decode_openings(bytes, held->subject_ids, held->subject_salts, &why)) held->subject_ids.clear();
    return true;
  };
  std::string error;
  const bool ok = af::read_export(in, v, error);
  print();
  if (!ok) {
    std::cerr << "integrity failure: " << error << "\n";
    return 5;
  }
  return 0;
}

int run(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  std::vector<std::string> files;
  std::string pubkey_file, trusted_file;
  bool allow_empty = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--pubkey" || args[i] == "--trusted-checkpoint") {
      if (i + 1 >= args.size()) return usage(args[i] + " needs a file");
      (args[i] == "--pubkey" ? pubkey_file : trusted_file) = args[i + 1];
      ++i;
    } else if (args[i] == "--allow-empty") {
      allow_empty = true;
    } else if (!args[i].empty() && args[i][0] == '-' && args[i] != "-") {
      return usage("unknown option '" + args[i] + "'");
    } else {
      files.push_back(args[i]);
    }
  }
  const std::size_t want = command == "verify-consistency" ? 2 : 1;
  if (files.size() < want) return usage(want == 2 ? "missing OLD or NEW" : "missing FILE");
  if (files.size() > want) return usage("unexpected argument '" + files[want] + "'");
  if (command == "dump") return dump(files[0]);
  if (command != "verify" && command != "verify-inclusion" && command != "verify-package" &&
      command != "verify-consistency")
    return usage("unknown command '" + command + "'");
  if ((!trusted_file.empty() || allow_empty) && command != "verify")
    return usage("--trusted-checkpoint and --allow-empty apply to verify only");
  if (pubkey_file.empty()) return usage("--pubkey is required");
  std::string vkey;
  if (!read_small(pubkey_file, vkey)) return cannot_read(pubkey_file);
  vkey = trimmed(vkey);
  try {
    (void)custos::auditfmt::parse_vkey(vkey);
  } catch (const std::exception&) {
    // A key file that is not a verifier key is the operator's mistake, not
    // evidence of tampering: usage error, not exit 5.
    return usage(pubkey_file + " does not hold a verifier key (expected <name>+<id>+<base64>)");
  }
  if (command == "verify-consistency") {
    std::ifstream older(files[0], std::ios::binary), newer(files[1], std::ios::binary);
    if (!older) return cannot_read(files[0]);
    if (!newer) return cannot_read(files[1]);
    return report(custos::auditfmt::verify_consistency_files(older, newer, vkey));
  }
  std::ifstream in(files[0], std::ios::binary);
  if (!in) return cannot_read(files[0]);
  if (command == "verify") {
    custos::auditfmt::VerifyOptions options;
    options.allow_empty = allow_empty;
    if (!trusted_file.empty()) {
      std::string note;
      if (!read_small(trusted_file, note)) return cannot_read(trusted_file);
      options.trusted_checkpoint = note;
    }
    return report(custos::auditfmt::verify_export(in, vkey, options));
  }
  return report(custos::auditfmt::verify_package(in, vkey));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::bad_alloc&) {
    std::cerr << "custos-audit: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "custos-audit: unexpected error: " << e.what() << "\n";
    return 1;
  } catch (...) {
    std::cerr << "custos-audit: unexpected error\n";
    return 1;
  }
}
