// libmediainfo comes from the system (Debian: libmediainfo-dev); `.ci/run` installs it.
fn main() {
    println!("cargo:rustc-link-lib=dylib=mediainfo");
    println!("cargo:rerun-if-changed=build.rs");
}
