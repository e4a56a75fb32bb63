// The key a client address is counted under by the per-address limits of
// custosd: the privacy page's rate limit (server.cpp) and
// --max-connections-per-address (connection.cpp).
#pragma once

#include <string>
#include <string_view>

namespace custos::http {

// An IPv4 address as it is; an IPv4-mapped IPv6 address (a dual-stack
// listener's view of an IPv4 client) as that IPv4 address; any other IPv6
// address as its /64 ("2001:db8:1:2::/64"): one subscriber's prefix, from
// which one host may take as many addresses as it likes, so counting the
// addresses one by one would count nothing. Anything else (not an address)
// is returned unchanged.
std::string client_address_group(std::string_view address);

}  // namespace custos::http
