//! Canonicalisers against the tricks attackers probe. One test per case, named
//! for the behaviour; `Err("…")` means refused with a reason containing "…".

use mcp_firewall::canon::{canonical_host, host_in, normalize_resource_uri, path_under, url_host};

fn check_uri(uri: &str, want: Result<&str, &str>) {
    let got = normalize_resource_uri(uri);
    match (&got, want) {
        (Ok(g), Ok(w)) => assert_eq!(g, w, "{uri:?}"),
        (Err(g), Err(w)) => assert!(g.contains(w), "{uri:?}: reason {g:?} lacks {w:?}"),
        _ => assert_eq!(format!("{got:?}"), format!("{want:?}"), "{uri:?}"),
    }
}

fn check_path_under((value, dir): (&str, &str), want: Result<bool, &str>) {
    let got = path_under(value, dir);
    match (&got, want) {
        (Ok(g), Ok(w)) => assert_eq!(*g, w, "{value:?} under {dir:?}"),
        (Err(g), Err(w)) => assert!(g.contains(w), "{value:?}: reason {g:?} lacks {w:?}"),
        _ => assert_eq!(
            format!("{got:?}"),
            format!("{want:?}"),
            "{value:?} under {dir:?}"
        ),
    }
}

fn check_host_in((value, hosts): (&str, &[&str]), want: Result<bool, &str>) {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let got = host_in(value, &hosts);
    match (&got, want) {
        (Ok(g), Ok(w)) => assert_eq!(*g, w, "{value:?} in {hosts:?}"),
        (Err(g), Err(w)) => assert!(g.contains(w), "{value:?}: reason {g:?} lacks {w:?}"),
        _ => assert_eq!(
            format!("{got:?}"),
            format!("{want:?}"),
            "{value:?} in {hosts:?}"
        ),
    }
}

fn check_url_host(value: &str, want: Result<&str, &str>) {
    let got = url_host(value);
    match (&got, want) {
        (Ok(g), Ok(w)) => assert_eq!(g, w, "{value:?}"),
        (Err(g), Err(w)) => assert!(g.contains(w), "{value:?}: reason {g:?} lacks {w:?}"),
        _ => assert_eq!(format!("{got:?}"), format!("{want:?}"), "{value:?}"),
    }
}

fn check_canonical_host(value: &str, want: Result<&str, &str>) {
    let got = canonical_host(value);
    match (&got, want) {
        (Ok(g), Ok(w)) => assert_eq!(g, w, "{value:?}"),
        (Err(g), Err(w)) => assert!(g.contains(w), "{value:?}: reason {g:?} lacks {w:?}"),
        _ => assert_eq!(format!("{got:?}"), format!("{want:?}"), "{value:?}"),
    }
}

/// One `#[test]` per row, so every verdict is named in the test output.
macro_rules! table {
    ($check:ident { $($name:ident: $input:expr => $want:expr;)* }) => {
        $( #[test] fn $name() { $check($input, $want) } )*
    };
}

// --- normalize_resource_uri ------------------------------------------------

table!(check_uri {
    uri_keeps_plain_file_uri: "file:///srv/docs/a.md" => Ok("file:///srv/docs/a.md");
    uri_lowercases_scheme_and_host: "HTTPS://Host.Example/X" => Ok("https://host.example/X");
    uri_removes_dotdot_in_http: "https://Host.Example/x/../y" => Ok("https://host.example/y");
    uri_removes_single_dots: "file:///srv/./docs/./a.md" => Ok("file:///srv/docs/a.md");
    uri_dot_at_end_keeps_directory_slash: "file:///srv/docs/." => Ok("file:///srv/docs/");
    uri_dotdot_at_end_keeps_directory_slash: "file:///srv/docs/x/.." => Ok("file:///srv/docs/");
    uri_keeps_custom_scheme_authority: "DB://X/y/../z" => Ok("db://x/z");
    uri_without_authority_keeps_rootless_path: "mem:notes/1" => Ok("mem:notes/1");
    uri_without_authority_resolves_dots: "mem:notes/./a/../1" => Ok("mem:notes/1");
    uri_decodes_unreserved_escapes: "file:///srv/%64ocs/%7Ea%2D%5F" => Ok("file:///srv/docs/~a-_");
    uri_uppercases_remaining_escapes: "file:///srv/a%3fb%c3%a9" => Ok("file:///srv/a%3Fb%C3%A9");
    uri_encodes_raw_space_like_its_escape: "file:///srv/my docs/a" => Ok("file:///srv/my%20docs/a");
    uri_encodes_raw_non_ascii_as_utf8: "file:///srv/é" => Ok("file:///srv/%C3%A9");
    uri_decodes_encoded_dots_then_resolves: "file:///srv/docs/%2e%2E/secrets" => Ok("file:///srv/secrets");
    uri_lowercases_ftp_host_and_keeps_its_port: "ftp://FTP.Example:2121/x" => Ok("ftp://ftp.example:2121/x");
    uri_refuses_userinfo: "https://x@internal.example.com/a" => Err("userinfo");
    uri_refuses_userinfo_with_password_and_dot: "https://user:pw@internal.example.com./a" => Err("userinfo");
    uri_refuses_userinfo_under_any_scheme: "db://bob@internal/x" => Err("userinfo");
    uri_refuses_encoded_at_in_host: "https://x%40internal.example.com/a" => Err("forbidden");
    uri_https_drops_trailing_dot_of_host: "https://Internal.Example.com./a" => Ok("https://internal.example.com/a");
    uri_https_trailing_dot_before_port: "https://internal.example.com.:443/a" => Ok("https://internal.example.com/a");
    uri_https_refuses_empty_label: "https://internal..example.com/a" => Err("empty label");
    uri_http_reads_decimal_ipv4: "http://2852039166/latest/meta-data" => Ok("http://169.254.169.254/latest/meta-data");
    uri_http_reads_hex_and_short_ipv4: "http://0xa9.254.43518/x" => Ok("http://169.254.169.254/x");
    uri_http_reads_ipv4_with_trailing_dot: "http://127.0.0.1./x" => Ok("http://127.0.0.1/x");
    uri_http_reads_ipv4_mapped_ipv6_as_ipv4: "http://[::ffff:7f00:1]/x" => Ok("http://127.0.0.1/x");
    uri_http_decodes_escaped_host: "https://%69nternal.example.com/a" => Ok("https://internal.example.com/a");
    uri_https_refuses_non_ascii_host: "https://\u{ff49}nternal.example.com/a" => Err("non-ASCII");
    uri_https_refuses_empty_host: "https:///internal.example.com/a" => Err("without a host");
    uri_https_refuses_missing_slashes: "https:internal.example.com/a" => Err("without '//'");
    uri_https_refuses_one_slash: "https:/internal.example.com/a" => Err("without '//'");
    uri_https_refuses_port_over_65535: "https://h:65536/x" => Err("65535");
    uri_custom_scheme_refuses_trailing_dot: "db://internal./x" => Err("ends in '.'");
    uri_custom_scheme_keeps_numeric_host: "db://2130706433/x" => Ok("db://2130706433/x");
    uri_drops_default_port_written_with_zeros: "http://169.254.169.254:080/latest" => Ok("http://169.254.169.254/latest");
    uri_drops_default_https_port_with_zeros: "https://internal.example.com:00443/x" => Ok("https://internal.example.com/x");
    uri_drops_ftp_default_port: "ftp://internal.example.com:021/x" => Ok("ftp://internal.example.com/x");
    uri_writes_other_port_without_zeros: "https://h:08443/x" => Ok("https://h:8443/x");
    uri_custom_scheme_port_without_zeros: "db://x:0042/y" => Ok("db://x:42/y");
    uri_keeps_port_zero: "db://x:000/y" => Ok("db://x:0/y");
    uri_drops_a_default_port_behind_many_zeros: "http://h:00000000080/x" => Ok("http://h/x");
    uri_refuses_port_over_65535_after_zeros: "https://h:0065536/x" => Err("65535");
    uri_refuses_trailing_space: "file:///srv/secret.txt " => Err("ends with a space");
    uri_refuses_leading_space: " file:///srv/secret.txt" => Err("starts or ends");
    uri_keeps_inner_space_encoded: "file:///srv/my docs/a" => Ok("file:///srv/my%20docs/a");
    uri_custom_scheme_refuses_escaped_trailing_dot: "res://vault%2e/token" => Err("ends in '.'");
    uri_drops_empty_port: "https://example.com:/x" => Ok("https://example.com/x");
    uri_gives_http_empty_path_a_slash: "https://example.com" => Ok("https://example.com/");
    uri_keeps_custom_empty_path: "db://x" => Ok("db://x");
    uri_lowercases_ipv6_literal: "http://[FE80::1]:8080/a" => Ok("http://[fe80::1]:8080/a");
    uri_keeps_query_out_of_dot_removal_and_drops_fragment: "https://h/a/b?x=/../y#/../z" => Ok("https://h/a/b?x=/../y");
    uri_drops_fragment_of_file_uri: "file:///etc/passwd#x" => Ok("file:///etc/passwd");
    uri_drops_empty_fragment: "file:///etc/passwd#" => Ok("file:///etc/passwd");
    uri_still_refuses_control_in_fragment: "file:///etc/passwd#a%0Ab" => Err("control");
    uri_refuses_query_on_file_uri: "file:///etc/passwd?x" => Err("query");
    uri_refuses_empty_query_on_file_uri: "file:///etc/passwd?" => Err("query");
    uri_drops_default_https_port: "https://h:443/x" => Ok("https://h/x");
    uri_keeps_other_port: "https://h:8443/x" => Ok("https://h:8443/x");
    uri_file_localhost_is_the_local_file: "file://LOCALHOST/etc/passwd" => Ok("file:///etc/passwd");
    uri_file_minimal_form_gets_empty_authority: "file:/etc/passwd" => Ok("file:///etc/passwd");
    uri_file_refuses_dot_before_a_relative_path: "file:./etc/passwd" => Err("not absolute");
    uri_file_dot_and_empty_segment_is_the_same_file: "file:.//etc/passwd" => Ok("file:///etc/passwd");
    uri_file_refuses_relative_path: "file:etc/passwd" => Err("not absolute");
    uri_custom_scheme_keeps_double_slash: "db://x/a//b" => Ok("db://x/a//b");
    uri_file_refuses_leading_double_slash: "file:////etc/passwd" => Err("'//'");
    uri_file_refuses_inner_double_slash: "file:///etc//passwd" => Err("'//'");
    uri_refuses_path_that_would_read_as_authority: "mem:/.//etc/x" => Err("'//'");
    uri_refuses_climb_above_root: "file:///srv/../../etc/passwd" => Err("climbs above");
    uri_refuses_encoded_climb_above_root: "file:///%2e%2e/etc/passwd" => Err("climbs above");
    uri_refuses_rootless_climb: "mem:notes/../../x" => Err("climbs above");
    uri_refuses_dotdot_after_double_slash: "file:///srv/docs////../../../etc" => Err("'//'");
    uri_refuses_encoded_slash: "file:///srv/docs/..%2Fsecrets" => Err("%2F");
    uri_refuses_lowercase_encoded_slash: "file:///srv/docs/a%2fb" => Err("%2F");
    uri_refuses_encoded_slash_in_query: "https://h/a?next=%2Fetc" => Err("%2F");
    uri_refuses_double_encoded_dot_dot: "file:///srv/docs/%252e%252e/x" => Err("%25");
    uri_refuses_raw_backslash: "file:///srv/docs\\..\\secret" => Err("backslash");
    uri_refuses_encoded_backslash: "file:///srv/docs/..%5Csecret" => Err("backslash");
    uri_refuses_encoded_nul: "file:///srv/docs/a.md%00.txt" => Err("NUL");
    uri_refuses_raw_control_character: "file:///srv/docs/a\nb" => Err("control");
    uri_refuses_encoded_control_character: "file:///srv/docs/a%0Ab" => Err("control");
    uri_refuses_c1_control_character: "file:///srv/\u{85}" => Err("control");
    uri_refuses_bad_escape: "file:///srv/100%" => Err("%HH");
    uri_refuses_missing_scheme: "/srv/docs/a.md" => Err("no scheme");
    uri_refuses_non_numeric_port: "https://h:8o/x" => Err("port");
    uri_refuses_two_at_signs: "https://a@b@h/x" => Err("userinfo");
});

// --- resource_pattern_problem ----------------------------------------------

fn check_pattern(pattern: &str, want: Result<(), &str>) {
    let got = mcp_firewall::canon::resource_pattern_problem(pattern);
    match (&got, want) {
        (None, Ok(())) => {}
        (Some(g), Err(w)) => assert!(g.contains(w), "{pattern:?}: reason {g:?} lacks {w:?}"),
        _ => assert_eq!(format!("{got:?}"), format!("{want:?}"), "{pattern:?}"),
    }
}

table!(check_pattern {
    pattern_normal_file_prefix_is_accepted: "file:///srv/docs/*" => Ok(());
    pattern_normal_double_star_is_accepted: "file:///srv/docs/**" => Ok(());
    pattern_host_wildcard_is_accepted: "https://*.example.com/*" => Ok(());
    pattern_question_mark_is_a_wildcard_not_a_query: "file:///srv/a?.md" => Ok(());
    pattern_of_stars_alone_is_accepted: "**" => Ok(());
    pattern_mixed_case_host_is_refused_with_its_normal_form: "https://Internal.Example.com/*" => Err("\"https://internal.example.com/*\"");
    pattern_raw_non_ascii_and_space_is_refused_with_its_normal_form: "file:///srv/Données RH/*" => Err("\"file:///srv/Donn%C3%A9es%20RH/*\"");
    pattern_encoded_unreserved_is_refused_with_its_normal_form: "file:///srv/%7Eadmin/*" => Err("\"file:///srv/~admin/*\"");
    pattern_dot_segments_are_refused: "file:///srv/docs/../etc/*" => Err("\"file:///srv/etc/*\"");
    pattern_fragment_is_refused: "file:///etc/passwd#x" => Err("fragment");
    pattern_without_scheme_is_refused: "srv/docs/*" => Err("no scheme");
    pattern_http_without_path_is_refused_with_slash: "https://example.com" => Err("\"https://example.com/\"");
});

// --- path_under ------------------------------------------------------------

table!(check_path_under {
    path_under_accepts_file_inside: ("/srv/work/a.txt", "/srv/work") => Ok(true);
    path_under_counts_the_directory_itself: ("/srv/work", "/srv/work/") => Ok(true);
    path_under_refuses_sibling_with_common_prefix: ("/srv/workspace-evil/x", "/srv/work") => Ok(false);
    path_under_resolves_dotdot_out_of_dir: ("/srv/work/../etc/passwd", "/srv/work") => Ok(false);
    path_under_resolves_dotdot_that_stays_inside: ("/srv/work/a/../b", "/srv/work") => Ok(true);
    path_under_collapses_double_slashes: ("//srv//work///a", "/srv/work") => Ok(true);
    path_under_decodes_encoded_dotdot: ("/srv/work/%2e%2e/etc", "/srv/work") => Ok(false);
    path_under_refuses_mixed_case_encoded_dotdot: ("/srv/work/%2e%2E/%2E%2e/etc", "/srv/work") => Ok(false);
    path_under_decodes_encoded_slash: ("/srv/work/..%2f..%2Fetc", "/srv/work") => Ok(false);
    path_under_refuses_double_encoding: ("/srv/work/%252e%252e/etc", "/srv/work") => Err("more than once");
    path_under_refuses_backslash: ("/srv/work/..\\..\\etc", "/srv/work") => Err("backslash");
    path_under_refuses_encoded_backslash: ("/srv/work/..%5c..%5cetc", "/srv/work") => Err("backslash");
    path_under_refuses_nul: ("/srv/work/a\0.txt", "/srv/work") => Err("NUL");
    path_under_refuses_encoded_nul: ("/srv/work/a%00.txt", "/srv/work") => Err("NUL");
    path_under_refuses_relative_path: ("work/a.txt", "/srv/work") => Err("relative");
    path_under_refuses_dot_relative_path: ("./srv/work/a", "/srv/work") => Err("relative");
    path_under_refuses_climb_above_root: ("/../srv/work/a", "/srv/work") => Err("above '/'");
    path_under_refuses_stray_percent: ("/srv/work/100%", "/srv/work") => Err("%HH");
    path_under_refuses_invalid_utf8_escape: ("/srv/work/%ff", "/srv/work") => Err("UTF-8");
    path_under_root_dir_holds_every_absolute_path: ("/etc/passwd", "/") => Ok(true);
    path_under_is_case_sensitive: ("/SRV/work/a", "/srv/work") => Ok(false);
});

// --- url_host / host_in ----------------------------------------------------

const LOOPBACK: &[&str] = &["127.0.0.1"];
const GOOD: &[&str] = &["good.com"];

table!(check_host_in {
    host_in_matches_listed_host: ("https://good.com/x", GOOD) => Ok(true);
    host_in_refuses_unlisted_host: ("https://evil.com/x", GOOD) => Ok(false);
    host_in_ignores_port: ("https://good.com:8443/x", GOOD) => Ok(true);
    host_in_folds_case: ("https://GOOD.Com/", GOOD) => Ok(true);
    host_in_drops_one_trailing_dot: ("https://good.com./", GOOD) => Ok(true);
    host_in_sees_through_userinfo: ("https://good.com@evil.com/", GOOD) => Ok(false);
    host_in_sees_through_userinfo_with_password: ("https://good.com:443@evil.com/", GOOD) => Ok(false);
    host_in_userinfo_on_listed_host_still_matches: ("https://user:pw@good.com/", GOOD) => Ok(true);
    host_in_reads_at_in_path_as_path: ("https://good.com/@evil.com", GOOD) => Ok(true);
    host_in_reads_at_after_fragment_as_fragment: ("https://good.com#@evil.com", GOOD) => Ok(true);
    host_in_refuses_backslash_trick: ("https://evil.com\\@good.com/", GOOD) => Err("backslash");
    host_in_refuses_subdomain_lookalike: ("https://good.com.evil.com/", GOOD) => Ok(false);
    host_in_decimal_ipv4_matches_loopback: ("http://2130706433/", LOOPBACK) => Ok(true);
    host_in_hex_short_ipv4_matches_loopback: ("http://0x7f.1/", LOOPBACK) => Ok(true);
    host_in_octal_ipv4_matches_loopback: ("http://0177.0.0.1/", LOOPBACK) => Ok(true);
    host_in_short_ipv4_matches_loopback: ("http://127.1/", LOOPBACK) => Ok(true);
    host_in_ipv4_with_trailing_dot_matches_loopback: ("http://127.0.0.1./", LOOPBACK) => Ok(true);
    host_in_percent_encoded_host_is_decoded: ("http://%31%32%37.0.0.1/", LOOPBACK) => Ok(true);
    host_in_ipv4_mapped_ipv6_matches_ipv4: ("http://[::ffff:127.0.0.1]/", LOOPBACK) => Ok(true);
    host_in_ipv4_mapped_ipv6_hex_matches_ipv4: ("http://[::ffff:7f00:1]:80/", LOOPBACK) => Ok(true);
    host_in_long_ipv6_matches_short_form: ("http://[0:0::1]/", &["::1"]) => Ok(true);
    host_in_full_ipv6_matches_bracketed_config: ("http://[0000:0000:0000:0000:0000:0000:0000:0001]/", &["[::1]"]) => Ok(true);
    host_in_config_short_ipv4_matches_dotted: ("http://127.0.0.1/", &["127.1"]) => Ok(true);
    host_in_compares_punycode_lowercased: ("https://XN--BCHER-KVA.example/", &["xn--bcher-kva.example"]) => Ok(true);
    host_in_refuses_non_ascii_host: ("https://bücher.example/", &["xn--bcher-kva.example"]) => Err("non-ASCII");
    host_in_refuses_fullwidth_dot: ("https://good\u{ff0e}com/", GOOD) => Err("non-ASCII");
    host_in_refuses_encoded_non_ascii_host: ("https://b%C3%BCcher.example/", GOOD) => Err("non-ASCII");
    host_in_refuses_tab_in_host: ("https://goo\td.com/", GOOD) => Err("whitespace");
    host_in_refuses_missing_slashes: ("https:good.com", GOOD) => Err("'//'");
    host_in_refuses_three_slashes: ("https:///evil.com", GOOD) => Err("more than two slashes");
    host_in_refuses_two_at_signs: ("https://good.com@x@evil.com/", GOOD) => Err("'@'");
    host_in_refuses_relative_url: ("//good.com/x", GOOD) => Err("no scheme");
    host_in_refuses_bare_host: ("good.com", GOOD) => Err("no scheme");
    host_in_refuses_empty_host: ("https://:443/", GOOD) => Err("no host");
    host_in_refuses_invalid_ipv4_octal_digit: ("http://127.0.0.09/", LOOPBACK) => Err("IPv4");
    host_in_refuses_ipv4_part_over_255: ("http://256.0.0.1/", LOOPBACK) => Err("255");
    host_in_refuses_five_part_number_host: ("http://1.2.3.4.5/", LOOPBACK) => Err("four parts");
    host_in_refuses_ipv6_zone_id: ("http://[fe80::1%25eth0]/", &["fe80::1"]) => Err("IPv6");
    host_in_refuses_port_over_65535: ("http://good.com:65536/", GOOD) => Err("port");
    host_in_refuses_encoded_slash_in_host: ("http://good.com%2F.evil.com/", GOOD) => Err("forbidden");
});

table!(check_url_host {
    url_host_serialises_ipv6_compressed: "http://[2001:DB8:0:0:1:0:0:1]/" => Ok("[2001:db8::1:0:0:1]");
    url_host_serialises_ipv6_with_ipv4_tail: "http://[::1.2.3.4]/" => Ok("[::102:304]");
    url_host_ipv6_all_zeros: "http://[0::0]/" => Ok("[::]");
    url_host_ipv6_compresses_first_of_equal_runs: "http://[1:0:0:2:0:0:3:4]/" => Ok("[1::2:0:0:3:4]");
    url_host_ipv6_never_compresses_single_zero: "http://[1:0:2:3:4:5:6:7]/" => Ok("[1:0:2:3:4:5:6:7]");
    url_host_ipv6_trailing_compression: "http://[1:2:3:4:5:6:7::]/" => Ok("[1:2:3:4:5:6:7:0]");
    url_host_ipv6_refuses_two_compressions: "http://[1::2::3]/" => Err("IPv6");
    url_host_ipv6_refuses_nine_pieces: "http://[1:2:3:4:5:6:7:8:9]/" => Err("IPv6");
    url_host_ipv6_refuses_leading_zero_in_ipv4_tail: "http://[::ffff:127.0.0.01]/" => Err("IPv6");
    url_host_ipv6_refuses_five_hex_digits: "http://[::12345]/" => Err("IPv6");
    url_host_ipv4_hex_full_form: "http://0x7F000001/" => Ok("127.0.0.1");
    url_host_ipv4_zero_x_alone_is_zero: "http://0x.0x.0x.0x/" => Ok("0.0.0.0");
    url_host_ws_scheme_is_parsed_too: "ws://Example.com:80/chat" => Ok("example.com");
    url_host_custom_scheme_uses_same_rules: "db://0x7f.1:5432/x" => Ok("127.0.0.1");
    url_host_query_ends_authority: "https://good.com?@evil.com" => Ok("good.com");
});

table!(check_canonical_host {
    config_host_lowercases_and_drops_trailing_dot: "Example.COM." => Ok("example.com");
    config_host_bare_ipv6_is_bracketed: "0:0:0:0:0:0:0:1" => Ok("[::1]");
    config_host_mapped_ipv6_becomes_ipv4: "[::ffff:10.0.0.5]" => Ok("10.0.0.5");
    config_host_refuses_url: "https://good.com/" => Err("IPv6");
    config_host_refuses_empty: "" => Err("empty");
    config_host_refuses_double_dot: "good..com" => Err("empty label");
});
