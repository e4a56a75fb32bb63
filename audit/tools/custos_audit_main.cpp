// custos-audit — the auditor's independent verifier.
//
// Built from audit/ only (libsodium, OpenSSL): it shares no code with the
// vault it checks. Exit codes: 0 verified, 5 integrity failure, 2 usage,
// 1 other (unreadable files).
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "custos_audit/entry.h"
#include "custos_audit/export.h"
#include "custos_audit/checkpoint.h"
#include "custos_audit/verify.h"

namespace {

constexpr const char* kUsage =
    "usage: custos-audit verify FILE --pubkey KEYFILE\n"
    "       custos-audit verify-inclusion BUNDLE.json --pubkey KEYFILE\n"
    "       custos-audit dump FILE\n"
    "KEYFILE holds the verifier key printed by `custos audit pubkey` (<name>+<id>+<base64>).\n";

int usage(const std::string& why) {
  std::cerr << "custos-audit: " << why << "\n" << kUsage;
  return 2;
}

bool read_text(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

int report(const custos::auditfmt::VerifyResult& r) {
  if (!r.ok) {
    std::cerr << "integrity failure: " << r.error << "\n";
    return 5;
  }
  std::cout << r.summary << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  std::string file, pubkey_file;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--pubkey") {
      if (i + 1 >= args.size()) return usage("--pubkey needs a file");
      pubkey_file = args[++i];
    } else if (file.empty()) {
      file = args[i];
    } else {
      return usage("unexpected argument '" + args[i] + "'");
    }
  }
  if (file.empty()) return usage("missing FILE");

  if (command == "dump") {
    std::ifstream in(file, std::ios::binary);
    if (!in) return std::cerr << "custos-audit: cannot read " << file << "\n", 1;
    custos::auditfmt::ExportVisitor v;
    v.on_entry = [](std::span<const std::uint8_t> bytes) {
      try {
        std::cout << custos::auditfmt::to_json(custos::auditfmt::decode(bytes)) << "\n";
      } catch (const std::exception& e) {
        std::cout << "{\"error\": \"" << e.what() << "\"}\n";
      }
      return true;
    };
    std::string error;
    if (!custos::auditfmt::read_export(in, v, error)) {
      std::cerr << "integrity failure: " << error << "\n";
      return 5;
    }
    return 0;
  }
  if (command != "verify" && command != "verify-inclusion") return usage("unknown command '" + command + "'");
  if (pubkey_file.empty()) return usage("--pubkey is required");
  std::string vkey;
  if (!read_text(pubkey_file, vkey)) return std::cerr << "custos-audit: cannot read " << pubkey_file << "\n", 1;
  vkey = trimmed(vkey);
  try {
    (void)custos::auditfmt::parse_vkey(vkey);
  } catch (const std::exception&) {
    // A key file that is not a verifier key is the operator's mistake, not
    // evidence of tampering: usage error, not exit 5.
    return usage(pubkey_file + " does not hold a verifier key (expected <name>+<id>+<base64>)");
  }
  if (command == "verify") {
    std::ifstream in(file, std::ios::binary);
    if (!in) return std::cerr << "custos-audit: cannot read " << file << "\n", 1;
    return report(custos::auditfmt::verify_export(in, vkey));
  }
  std::string bundle;
  if (!read_text(file, bundle)) return std::cerr << "custos-audit: cannot read " << file << "\n", 1;
  return report(custos::auditfmt::verify_inclusion_bundle(bundle, vkey));
}
