pub fn run() {
    println!("{}", crate::spec::schema::json());
}
