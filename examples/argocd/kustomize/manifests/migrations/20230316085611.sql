create sequence users_seq;
create table users (
  id int not null default nextval ('users_seq'),
  name varchar(255) not null,
  email varchar(255) unique not null,
  short_bio varchar(255) not null,
  primary key (id)
);
