fn main(){ println!("cargo:rustc-link-arg-bins=-nostdlib"); println!("cargo:rustc-link-arg-bins=-static"); println!("cargo:rustc-link-arg-bins=-no-pie"); }
