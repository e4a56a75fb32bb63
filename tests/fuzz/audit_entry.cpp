// Fuzz target: audit entry decoding (audit/FORMAT.md §1).
//
// Input: bytes offered as one canonical entry. Invariants:
//  - decode either throws std::runtime_error (its documented error) or
//    returns an entry that encodes back to exactly the same bytes (the
//    encoding is canonical: the Merkle leaf hashes it), with encoded_size
//    agreeing;
//  - parse_view accepts every entry decode accepts, and sees the same fields;
//  - to_json of a decoded entry does not throw.
#include <cstdint>
#include <stdexcept>

#include "custos_audit/entry.h"
#include "fuzz_support.h"

namespace af = custos::auditfmt;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  af::EntryView view;
  const char* why = nullptr;
  const bool view_ok = af::parse_view(bytes, view, &why);
  FUZZ_CHECK(view_ok || why != nullptr, "parse_view refused without saying why");
  af::Entry entry;
  try {
    entry = af::decode(bytes);
  } catch (const std::runtime_error&) {
    return 0;
  }
  const std::vector<std::uint8_t> again = af::encode(entry);
  FUZZ_CHECK(again.size() == size && std::equal(again.begin(), again.end(), data),
             "decode accepted bytes that do not re-encode to themselves");
  FUZZ_CHECK(af::encoded_size(entry) == again.size(), "encoded_size disagrees with encode");
  FUZZ_CHECK(view_ok, std::string("parse_view refused an entry decode accepts: ") + (why ? why : ""));
  FUZZ_CHECK(view.version == entry.version && view.seq == entry.seq && view.prev == entry.prev, "view header differs");
  FUZZ_CHECK(view.time == entry.time && view.principal == entry.principal && view.purpose == entry.purpose &&
                 view.operation == entry.operation && view.subject_id == entry.subject_id &&
                 view.outcome == entry.outcome,
             "view fields differ from the decoded entry");
  if (entry.version == af::kEntryVersion) {
    const auto items = af::list_items(view.subject_list);
    FUZZ_CHECK(items.size() == entry.subject_ids.size(), "subject list length differs");
    for (std::size_t i = 0; i < items.size(); ++i) FUZZ_CHECK(items[i] == entry.subject_ids[i], "subject list item differs");
  } else {
    FUZZ_CHECK(view.subject_count == entry.subject_count && view.subject_root == entry.subject_root,
               "subject commitment differs");
  }
  (void)af::to_json(entry);
  return 0;
}
